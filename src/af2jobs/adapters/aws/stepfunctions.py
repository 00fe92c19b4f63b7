"""The AWS Orchestrator: one Step Functions execution per job, named after the job id; cancel stops it and
terminates the job's Batch jobs.

Where the AWS references live on the job record (in `artifacts`, the one name -> string map that a write merges
entry by entry, so writers recording different entries never erase each other's):

    artifacts["aws:execution_arn"]         the execution's ARN, written by `start`
    artifacts["aws:batch:<batch job id>"]  the stage ("msa", "predict", ...) of each Batch job run for the job;
                                           written by whoever learns the id first (the Batch entrypoint from
                                           $AWS_BATCH_JOB_ID, or the Batch state-change event handler). One entry
                                           per Batch job, so a retry on a larger queue adds an entry.
    artifacts["aws:log:<stage>"]           the CloudWatch log stream of the stage's latest Batch job (from its
                                           RUNNING state-change event): GET /jobs/{id} tails it while it runs

Names starting with "aws:" are references, not store keys: readers that turn artifacts into download links skip
them (af2jobs.layout.is_reference).
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from af2jobs import errors, lifecycle
from af2jobs.layout import REFERENCE_PREFIX
from af2jobs.models import TERMINAL, Job, JobState
from af2jobs.ports import JobRepository

EXECUTION_ARN = f"{REFERENCE_PREFIX}execution_arn"
BATCH_JOB_PREFIX = f"{REFERENCE_PREFIX}batch:"
CANCEL_REASON = "cancelled through af2jobs"


def batch_job_artifact(batch_job_id: str) -> str:
    """The artifacts name under which a Batch job of this job is recorded (its value: the stage)."""
    return f"{BATCH_JOB_PREFIX}{batch_job_id}"


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    """The ARN the execution of `job_id` has (Step Functions derives it from the machine's ARN and the name)."""
    head, sep, machine = state_machine_arn.partition(":stateMachine:")
    if not sep:
        raise errors.ConfigurationError(f"{state_machine_arn!r} is not a state machine ARN")
    return f"{head}:execution:{machine}:{job_id}"


class StepFunctionsOrchestrator:
    def __init__(self, state_machine_arn: str, repo: JobRepository, client: Any = None, batch_client: Any = None):
        self.state_machine_arn = state_machine_arn
        self._repo = repo
        self._sfn = client if client is not None else boto3.client("stepfunctions")
        self._batch = batch_client if batch_client is not None else boto3.client("batch")

    def start(self, job: Job) -> None:
        """Start the execution named after the job, so the console finds a job by its id. Starting again while
        it runs returns the same execution (Step Functions treats the same name and input as one start)."""
        response = self._sfn.start_execution(
            stateMachineArn=self.state_machine_arn,
            name=job.id,
            input=json.dumps({"job_id": job.id, "owner": job.owner}),
        )
        self._repo.update(job.id, artifacts={EXECUTION_ARN: response["executionArn"]})

    def cancel(self, job: Job) -> None:
        """Stop the execution, terminate the recorded Batch jobs, then move the job CANCELLING -> CANCELLED.
        Safe to repeat; a job already finished is left alone."""
        # Re-read: Batch jobs may have been recorded since the caller read the job.
        current = self._repo.get(job.id)
        if current.state in TERMINAL:
            return
        if current.state is not JobState.CANCELLING:
            # Stopping compute under a job whose record says it runs would leave it stuck; the service moves
            # the job to CANCELLING first.
            raise errors.ConflictError(f"job {job.id} is {current.state.value}; only a CANCELLING job is stopped")
        # The execution first: once it is stopped, no further Batch job can be submitted for this job.
        self._stop_execution(current)
        self._terminate_batch_jobs(current)
        self._mark_cancelled(current.id)

    def _stop_execution(self, job: Job) -> None:
        arn = job.artifacts.get(EXECUTION_ARN) or execution_arn(self.state_machine_arn, job.id)
        try:
            status = self._sfn.describe_execution(executionArn=arn)["status"]
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return  # never started (start failed before StartExecution): nothing runs
        if status == "RUNNING":
            self._sfn.stop_execution(executionArn=arn, error="Cancelled", cause=f"job {job.id} {CANCEL_REASON}")

    def _terminate_batch_jobs(self, job: Job) -> None:
        # TerminateJob also cancels a job still waiting in its queue, and does nothing to a finished one.
        for name in sorted(job.artifacts):
            if name.startswith(BATCH_JOB_PREFIX):
                self._batch.terminate_job(jobId=name.removeprefix(BATCH_JOB_PREFIX), reason=CANCEL_REASON)

    def _mark_cancelled(self, job_id: str) -> None:
        try:
            lifecycle.finish_cancel(self._repo, job_id, expected={JobState.CANCELLING})
        except errors.ConflictError:
            # A concurrent cancel (or the stopped stage itself) got there first; anything else is a real conflict.
            if self._repo.get(job_id).state not in TERMINAL:
                raise
