"""JobLogs on AWS: a running stage's lines from its Batch job's CloudWatch log stream (the stream the Batch
state-change event named, recorded on the job as artifacts["aws:log:<stage>"]). The stored log.txt is written when
a stage ends; until then this is where GET /jobs/{id} reads the job's latest lines."""

from __future__ import annotations

import logging

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from af2jobs.layout import log_stream_artifact
from af2jobs.models import Job, JobState

log = logging.getLogger(__name__)

STAGE_OF = {JobState.MSA: "msa", JobState.PREDICTING: "predict"}


class CloudWatchJobLogs:
    def __init__(self, log_group: str, client=None) -> None:
        self.log_group = log_group
        self.client = client or boto3.client("logs")

    def tail(self, job: Job, lines: int) -> list[str] | None:
        stage = STAGE_OF.get(job.state)
        stream = job.artifacts.get(log_stream_artifact(stage)) if stage else None
        if stream is None:
            return None
        try:
            events = self.client.get_log_events(logGroupName=self.log_group, logStreamName=stream, limit=lines,
                                                startFromHead=False)["events"]
        except (ClientError, BotoCoreError) as exc:  # the stored log answers instead
            log.warning("job %s: log stream %s not read: %s", job.id, stream, exc)
            return None
        return [line for e in events for line in str(e.get("message", "")).splitlines()][-lines:]


__all__ = ["CloudWatchJobLogs"]
