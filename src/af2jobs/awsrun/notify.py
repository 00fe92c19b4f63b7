"""NotifyFunction: a finished job's outcome through the Notifier (SNS on AWS). A job no longer in the state the
event names (cancelled meanwhile, say) is not announced as such."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from af2jobs.awsrun.errors import job_id_of
from af2jobs.awsrun.parts import TaskParts
from af2jobs.models import JobEvent, JobState

log = logging.getLogger(__name__)

EXPECTED_STATE = {JobEvent.SUCCEEDED: JobState.SUCCEEDED, JobEvent.FAILED: JobState.FAILED}


def notify(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: job_id, event ("succeeded" | "failed")."""
    job_id = job_id_of(event)
    job_event = JobEvent(event.get("event"))
    job = parts.repo.get(job_id)
    if EXPECTED_STATE.get(job_event) is not job.state:
        log.warning("not notifying %s: the job is %s", job_event.value, job.state.value)
        return {"sent": False, "state": job.state.value}
    parts.notifier.notify(job, job_event)
    return {"sent": True, "state": job.state.value}


__all__ = ["notify"]
