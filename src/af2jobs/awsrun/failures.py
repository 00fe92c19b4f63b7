"""Reading a failed step out of a Catch's {Error, Cause}, into the error the job records. A failed Batch job
reaches the definition as States.TaskFailed with the job's description as the Cause; a failed Lambda with its
error type and message; a timeout as States.Timeout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from af2jobs.awsrun.contract import EXIT_GPU_OUT_OF_MEMORY, GPU_OUT_OF_MEMORY
from af2jobs.awsrun.parts import FailureReports
from af2jobs.models import Job, JobError, JobState

S = JobState
# The stage a failure is recorded under, by the state the job was in.
STAGE_OF_STATE = {S.QUEUED: "queued", S.VALIDATING: "validating", S.MSA: "msa", S.PREDICTING: "predict"}
MAX_MESSAGE = 1000
TIMEOUT = "States.Timeout"


@dataclass(frozen=True)
class BatchFailure:
    """A failed Batch job, as a batch:submitJob.sync failure's Cause describes it."""

    batch_job_id: str | None
    job_name: str | None
    queue: str | None
    status_reason: str | None
    exit_code: int | None


# The reason Batch gives a job that its queue's JobStateTimeLimitActions cancelled for want of instances.
NO_CAPACITY = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"


def batch_field(data: Mapping[str, Any], name: str) -> Any:
    """A field of a Batch job description. Step Functions hands it on with PascalCase names; Batch's own API (and
    the Batch events) spell them camelCase. Either is read, so the code does not hang on a service's casing."""
    return data.get(name, data.get(name[:1].lower() + name[1:]))


def _cause(failure: Mapping[str, Any]) -> Any:
    try:
        return json.loads(failure.get("Cause") or "")
    except (TypeError, ValueError):
        return None


def batch_failure(failure: Mapping[str, Any]) -> BatchFailure | None:
    """The Batch job in a failure's Cause; None when the failure is something else (a Lambda error, a submit
    that the Batch API refused, a timeout)."""
    cause = _cause(failure)
    if not isinstance(cause, dict) or batch_field(cause, "JobId") is None or batch_field(cause, "Status") is None:
        return None
    container = batch_field(cause, "Container") or {}
    exit_code = batch_field(container, "ExitCode")
    if exit_code is None:  # the job's own container block can lack it; its last attempt has it
        attempts = batch_field(cause, "Attempts") or []
        if attempts:
            exit_code = batch_field(batch_field(attempts[-1], "Container") or {}, "ExitCode")
    queue = batch_field(cause, "JobQueue")
    return BatchFailure(
        batch_job_id=batch_field(cause, "JobId"),
        job_name=batch_field(cause, "JobName"),
        queue=queue.rsplit("/", 1)[-1] if isinstance(queue, str) else None,
        status_reason=batch_field(cause, "StatusReason"),
        exit_code=int(exit_code) if isinstance(exit_code, (int, float, str)) and str(exit_code).isdigit() else None,
    )


def describe_failure(reports: FailureReports, job: Job, failure: Mapping[str, Any]) -> JobError:
    """The job's error: what the failed Batch job reported about itself where it could, else what the failure
    says (a Batch job's status and exit code, or a Lambda's error type and message)."""
    stage = STAGE_OF_STATE.get(job.state, job.state.value.lower())
    batch = batch_failure(failure)
    if batch is None:
        error = str(failure.get("Error") or "Unknown")
        cause = _cause(failure)
        message = cause.get("errorMessage") if isinstance(cause, dict) else failure.get("Cause")
        if not message and error == TIMEOUT:
            message = f"the {stage} step ran longer than the state machine's TimeoutSeconds for it"
        return JobError(type=error, message=str(message or "no cause given")[:MAX_MESSAGE], stage=stage)
    where = f"Batch job {batch.job_name} ({batch.batch_job_id}) on queue {batch.queue}"
    report = reports.failure(job.id, batch.batch_job_id) if batch.batch_job_id else None
    if report is not None:
        message = f"{report.get('message')} [{where}, exit code {batch.exit_code}]"
        return JobError(type=str(report.get("type") or "BatchJobFailed"), message=message[:MAX_MESSAGE],
                        stage=str(report.get("stage") or stage))
    if batch.exit_code == EXIT_GPU_OUT_OF_MEMORY:
        return JobError(type=GPU_OUT_OF_MEMORY, message=f"the prediction ran out of GPU memory [{where}]",
                        stage=stage)
    if batch.status_reason and NO_CAPACITY in batch.status_reason:
        message = (f"no instance for queue {batch.queue} could be started within the stack's CapacityWaitSeconds "
                   f"({NO_CAPACITY}: EC2 capacity or the account's instance quota); the job was cancelled so that "
                   f"the jobs behind it can run: submit again later, or to another queue [{where}]")
        return JobError(type="NoCapacity", message=message[:MAX_MESSAGE], stage=stage)
    message = f"{where} failed: {batch.status_reason or 'no reason given'}, exit code {batch.exit_code}"
    return JobError(type="BatchJobFailed", message=message[:MAX_MESSAGE], stage=stage)


__all__ = ["BatchFailure", "MAX_MESSAGE", "STAGE_OF_STATE", "batch_failure", "batch_field", "describe_failure"]
