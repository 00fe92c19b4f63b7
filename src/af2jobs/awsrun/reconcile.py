"""ReconcileFunction: an execution of the state machine that ended outside its own Catch (a DataLimitExceeded, a
MarkFailed that failed, an abort, the execution's timeout) would leave its job in MSA or PREDICTING for good. An
EventBridge "Step Functions Execution Status Change" (FAILED, TIMED_OUT, ABORTED) of this stack's state machine
ends the job here: FAILED with the execution's error and cause, and the owner told; a job being cancelled, whose
execution the cancel aborted, CANCELLED. A job already finished is left as it is, so a repeated event, or the
end of an execution whose own states already ended the job, changes and sends nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from af2jobs import errors, lifecycle
from af2jobs.models import TERMINAL, JobError, JobEvent, JobState
from af2jobs.ports import JobRepository, Notifier

log = logging.getLogger(__name__)

ENDED = {"FAILED": "ExecutionFailed", "TIMED_OUT": "ExecutionTimedOut", "ABORTED": "ExecutionAborted"}


def execution_end(event: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(job id, status, reason) of an execution that ended badly; None for any other event. The execution is named
    after its job (the orchestrator starts it so)."""
    detail = event.get("detail") or {}
    status = detail.get("status")
    job_id = detail.get("name")
    if status not in ENDED or not job_id:
        return None
    error, cause = detail.get("error") or "", detail.get("cause") or ""
    reason = f"the state machine execution ended {status}" + (f": {error}" if error else "") + (
        f": {str(cause)[:400]}" if cause else "")
    return str(job_id), str(status), reason


def reconcile(repo: JobRepository, notifier: Notifier, event: Mapping[str, Any]) -> dict[str, Any]:
    ended = execution_end(event)
    if ended is None:
        return {"reconciled": False}
    job_id, status, reason = ended
    try:
        job = repo.get(job_id)
    except errors.NotFoundError:
        log.warning("execution %s ended %s; no such job", job_id, status)
        return {"reconciled": False}
    if job.state in TERMINAL:
        return {"reconciled": False, "state": job.state.value}  # its own states ended it, or an earlier event did
    try:
        if job.state is JobState.CANCELLING:
            done, event_ = lifecycle.finish_cancel(repo, job_id, expected={JobState.CANCELLING}), JobEvent.CANCELLED
        else:
            error = JobError(type=ENDED[status], message=reason, stage=job.state.value.lower())
            done, event_ = lifecycle.fail(repo, job_id, error, expected={job.state}), JobEvent.FAILED
    except errors.ConflictError:
        return {"reconciled": False, "state": repo.get(job_id).state.value}  # it moved meanwhile: that move stands
    log.warning("job %s was %s when its execution ended %s; now %s", job_id, job.state.value, status,
                done.state.value)
    notifier.notify(done, event_)
    return {"reconciled": True, "state": done.state.value}


__all__ = ["ENDED", "execution_end", "reconcile"]
