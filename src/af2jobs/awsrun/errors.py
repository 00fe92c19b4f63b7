"""The errors the state machine's Retry/Catch match by name (the Lambda runtime reports an exception's class name),
and where a task raises them:

    InvalidJob        the job's request or input does not validate any more         Catch -> MarkFailed, no retry
    JobCancelled      the job was cancelled meanwhile                                Catch -> Cancelled (the
                                                                                     orchestrator finishes it)
    JobStateConflict  the record is in a state this step cannot start from           Catch -> MarkFailed
    OutputsMissing    the prediction reported success without predictions.json       Catch -> MarkFailed
A failed Batch job reaches the definition as States.TaskFailed with the job's description as the Cause
(af2jobs.awsrun.failures reads it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from af2jobs import errors
from af2jobs.models import Job, JobState
from af2jobs.ports import JobRepository


class StepError(Exception):
    """An error the state machine matches by its class name."""


class InvalidJob(StepError):
    """The job's request or input does not validate; running it again would fail the same way."""


class JobCancelled(StepError):
    """The job was cancelled while this step ran or before it; the orchestrator moves it to CANCELLED."""


class JobStateConflict(StepError):
    """The job is in a state this step cannot start from."""


class OutputsMissing(StepError):
    """The prediction reported success, but its published results are not in the store."""


def job_id_of(event: Mapping[str, Any]) -> str:
    job_id = event.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJob(f"the task input has no job_id: {sorted(event)}")
    return job_id


def refuse_cancelled(job: Job) -> None:
    if job.state in (JobState.CANCELLING, JobState.CANCELLED):
        raise JobCancelled(f"job {job.id} is {job.state.value}")


@contextmanager
def race_lost_as_step_error(repo: JobRepository, job_id: str) -> Iterator[None]:
    """A conditional write that lost its race becomes JobCancelled when a cancel won it, JobStateConflict
    otherwise."""
    try:
        yield
    except errors.ConflictError as exc:
        refuse_cancelled(repo.get(job_id))
        raise JobStateConflict(exc.message) from None


__all__ = ["InvalidJob", "JobCancelled", "JobStateConflict", "OutputsMissing", "StepError", "job_id_of",
           "race_lost_as_step_error", "refuse_cancelled"]
