"""BatchEventsFunction: an EventBridge "Batch Job State Change" of this stack's queues onto the job record. The
Batch job is recorded on its job (artifacts["aws:batch:<id>"] = stage, what a cancel terminates) and, while the
job is in that stage, what happened becomes its progress line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from af2jobs import errors, lifecycle
from af2jobs.adapters.aws.stepfunctions import batch_job_artifact
from af2jobs.awsrun.contract import STAGE_STATES
from af2jobs.layout import log_stream_artifact
from af2jobs.models import Progress
from af2jobs.ports import JobRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchJobChange:
    job_id: str
    stage: str
    batch_job_id: str
    status: str
    queue: str
    reason: str | None
    exit_code: int | None
    log_stream: str | None = None


def batch_job_change(event: Mapping[str, Any]) -> BatchJobChange | None:
    """The af2jobs job and stage of a Batch job state change; None for a Batch job that is not a stage of one.
    The job id is the job's `job_id` parameter (the state machine's submission sets it), else its name
    ("<stage>-<job id>"); the stage is the command's (`python -m af2jobs.awsrun.batch <stage> ...`), else the
    name's."""
    detail = event.get("detail") or {}
    name = str(detail.get("jobName") or "")
    stage_from_name, _, id_from_name = name.partition("-")
    job_id = (detail.get("parameters") or {}).get("job_id") or id_from_name
    command = list((detail.get("container") or {}).get("command") or [])
    entry = next((i for i, word in enumerate(command[:-1]) if word.startswith("af2jobs.")), None)
    stage = command[entry + 1] if entry is not None else stage_from_name
    if not job_id or stage not in STAGE_STATES or not detail.get("jobId"):
        return None
    exit_code = (detail.get("container") or {}).get("exitCode")
    return BatchJobChange(job_id=job_id, stage=stage, batch_job_id=detail["jobId"], status=str(detail.get("status")),
                          queue=str(detail.get("jobQueue", "")).rsplit("/", 1)[-1],
                          reason=detail.get("statusReason"), exit_code=exit_code,
                          log_stream=(detail.get("container") or {}).get("logStreamName"))


def batch_event_keys(event: Mapping[str, Any]) -> dict[str, str]:
    change = batch_job_change(event)
    return {"job_id": change.job_id, "batch_job_id": change.batch_job_id} if change else {}


def record_batch_event(repo: JobRepository, event: Mapping[str, Any]) -> dict[str, Any]:
    change = batch_job_change(event)
    if change is None:
        log.info("not a Batch job of an af2jobs stage; ignored")
        return {"recorded": False}
    artifacts = {batch_job_artifact(change.batch_job_id): change.stage}
    if change.log_stream:  # from RUNNING on: where GET /jobs/{id} reads the stage's live log
        artifacts[log_stream_artifact(change.stage)] = change.log_stream
    message = f"{change.stage} Batch job {change.batch_job_id} {change.status} on queue {change.queue}"
    if change.reason:
        message += f": {change.reason}"
    if change.exit_code is not None:
        message += f" (exit code {change.exit_code})"
    try:
        repo.update(change.job_id, artifacts=artifacts)
        lifecycle.report_progress(repo, change.job_id, Progress(stage=change.stage, message=message[:500]),
                                  expected={STAGE_STATES[change.stage]})
    except errors.NotFoundError:
        log.warning("job %s no longer exists; %s not recorded", change.job_id, change.batch_job_id)
        return {"recorded": False}
    except errors.ConflictError:
        pass  # the job has moved past this stage (or ended): its progress is kept, the Batch job recorded
    log.info(message)
    return {"recorded": True, "job_id": change.job_id, "stage": change.stage}


__all__ = ["BatchJobChange", "batch_event_keys", "batch_job_change", "record_batch_event"]
