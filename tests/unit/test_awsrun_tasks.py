"""The state machine tasks' pure parts: reading a failed Batch job from a Catch's Cause, the plan Validate returns,
and the error a failed job records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from af2jobs.awsrun import failures, validate
from af2jobs.awsrun.contract import EXIT_GPU_OUT_OF_MEMORY
from af2jobs.models import Job, JobState
from af2jobs.request import JobRequest
from tests.conftest import UBIQUITIN

QUEUES = {name: f"arn:aws:batch:us-east-1:123456789012:job-queue/q-{name}" for name in validate.GPU_QUEUES}


def _job(state: JobState = JobState.PREDICTING, **request: Any) -> Job:
    body = {"fasta": "ubq", "sequence": UBIQUITIN, **request}
    return Job(owner="ann", request=JobRequest.parse(body), state=state)


def _cause(job: dict[str, Any]) -> dict[str, str]:
    return {"Error": "States.TaskFailed", "Cause": json.dumps(job)}


# What Step Functions puts in the Cause of a failed batch:submitJob.sync: the job's description, PascalCase.
PASCAL = {"JobId": "j-1", "JobName": "predict-abc", "JobQueue": QUEUES["low"], "Status": "FAILED",
          "StatusReason": "Essential container in task exited", "Container": {"ExitCode": EXIT_GPU_OUT_OF_MEMORY},
          "Attempts": [{"Container": {"ExitCode": EXIT_GPU_OUT_OF_MEMORY}}]}


class Reports:
    def __init__(self, reports: dict[str, dict[str, Any]] | None = None) -> None:
        self.reports = reports or {}

    def failure(self, job_id: str, batch_job_id: str) -> dict[str, Any] | None:
        return self.reports.get(batch_job_id)


def test_a_batch_failure_is_read_in_either_casing_and_from_the_last_attempt():
    pascal = failures.batch_failure(_cause(PASCAL))
    assert pascal == failures.BatchFailure("j-1", "predict-abc", "q-low", "Essential container in task exited", 75)
    camel = {"jobId": "j-1", "jobName": "predict-abc", "jobQueue": QUEUES["low"], "status": "FAILED",
             "container": {}, "attempts": [{"container": {"exitCode": 1}}, {"container": {"exitCode": 137}}]}
    assert failures.batch_failure(_cause(camel)).exit_code == 137


@pytest.mark.parametrize("failure", [
    {"Error": "InvalidJob", "Cause": json.dumps({"errorType": "InvalidJob", "errorMessage": "bad"})},
    {"Error": "Batch.ClientException", "Cause": "Error executing request, Exception : queue does not exist"},
    {"Error": "States.Timeout", "Cause": ""},
    {},
])
def test_other_failures_are_not_batch_jobs(failure):
    assert failures.batch_failure(failure) is None


def test_the_plan_picks_the_queue_and_scales_resources_with_the_gpu_count():
    request = JobRequest.parse({"fasta": "ubq", "sequence": UBIQUITIN, "gpu": 4, "que": "high"})
    plan = validate.plan(request, request.records(), QUEUES, cached=False)
    assert (plan["queue"], plan["next_queue"], plan["next_queue_arn"]) == ("high", "p4", QUEUES["p4"])
    assert plan["resources"] == [{"Type": "GPU", "Value": "4"}, {"Type": "VCPU", "Value": "32"},
                                 {"Type": "MEMORY", "Value": "122880"}]
    auto = JobRequest.parse({"fasta": "ubq", "sequence": UBIQUITIN})
    assert validate.plan(auto, auto.records(), QUEUES, cached=True)["queue"] == "low"  # 76 residues
    assert [validate.next_queue(q) for q in validate.GPU_QUEUES] == ["mid", "high", "p4", None]


def test_a_failed_job_records_the_batch_jobs_own_report_else_what_the_failure_says():
    job = _job()
    report = {"stage": "features", "type": "StageError", "message": "features: no MSA rows"}
    error = failures.describe_failure(Reports({"j-1": report}), job, _cause({**PASCAL, "Container": {"ExitCode": 1}}))
    assert (error.type, error.stage) == ("StageError", "features")
    assert error.message.startswith("features: no MSA rows [Batch job predict-abc (j-1) on queue q-low")

    oom = failures.describe_failure(Reports(), job, _cause(PASCAL))
    assert (oom.type, oom.stage) == ("GpuOutOfMemory", "predict")

    lambda_error = {"Error": "InvalidJob", "Cause": json.dumps({"errorType": "InvalidJob", "errorMessage": "bad"})}
    invalid = failures.describe_failure(Reports(), _job(JobState.VALIDATING), lambda_error)
    assert (invalid.type, invalid.message, invalid.stage) == ("InvalidJob", "bad", "validating")

    timeout = failures.describe_failure(Reports(), _job(JobState.MSA), {"Error": "States.Timeout", "Cause": ""})
    assert timeout.type == "States.Timeout" and "TimeoutSeconds" in timeout.message and timeout.stage == "msa"


# ==============================================================================================================
# The reconciler: executions that ended outside the state machine's Catch


def _ended(job_id: str, status: str, **detail: Any) -> dict[str, Any]:
    return {"source": "aws.states", "detail-type": "Step Functions Execution Status Change",
            "detail": {"name": job_id, "status": status, **detail}}


class Told:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def notify(self, job: Job, event: Any) -> None:
        self.sent.append((job.id, event.value))


@pytest.mark.parametrize(("state", "status"), [(JobState.MSA, "FAILED"), (JobState.PREDICTING, "TIMED_OUT"),
                                               (JobState.VALIDATING, "ABORTED")])
def test_an_execution_that_ended_badly_fails_its_unfinished_job_once_and_says_why(state, status):
    from af2jobs.awsrun import reconcile
    from tests.fakes import MemoryJobRepository

    repo, told = MemoryJobRepository(), Told()
    job = repo.create(_job(state=JobState.QUEUED))
    for move in {JobState.VALIDATING: ["VALIDATING"], JobState.MSA: ["VALIDATING", "MSA"],
                 JobState.PREDICTING: ["VALIDATING", "MSA", "PREDICTING"]}[state]:
        job = repo.transition(job.id, {job.state}, JobState(move))
    event = _ended(job.id, status, error="States.DataLimitExceeded", cause="the state output exceeds 256 KB")

    assert reconcile.reconcile(repo, told, event) == {"reconciled": True, "state": "FAILED"}
    failed = repo.get(job.id)
    assert failed.error.type == reconcile.ENDED[status] and failed.error.stage == state.value.lower()
    assert f"ended {status}: States.DataLimitExceeded: the state output exceeds 256 KB" in failed.error.message
    assert told.sent == [(job.id, "failed")]
    # The same event again (EventBridge delivers at least once): nothing changes, nothing is sent.
    assert reconcile.reconcile(repo, told, event)["reconciled"] is False
    assert told.sent == [(job.id, "failed")] and repo.get(job.id).error == failed.error


def test_a_finished_job_and_other_events_are_left_alone_and_a_cancel_ends_cancelled():
    from af2jobs.awsrun import reconcile
    from tests.fakes import MemoryJobRepository

    repo, told = MemoryJobRepository(), Told()
    done = repo.create(_job(state=JobState.QUEUED))
    for move in ("VALIDATING", "MSA", "PREDICTING", "SUCCEEDED"):
        done = repo.transition(done.id, {done.state}, JobState(move))
    assert reconcile.reconcile(repo, told, _ended(done.id, "FAILED")) == {"reconciled": False, "state": "SUCCEEDED"}
    assert reconcile.reconcile(repo, told, _ended(done.id, "SUCCEEDED"))["reconciled"] is False
    assert reconcile.reconcile(repo, told, _ended("no-such-job", "FAILED"))["reconciled"] is False
    cancelling = repo.create(_job(state=JobState.QUEUED))
    for move in ("VALIDATING", "MSA", "CANCELLING"):
        cancelling = repo.transition(cancelling.id, {cancelling.state}, JobState(move))
    assert reconcile.reconcile(repo, told, _ended(cancelling.id, "ABORTED"))["state"] == "CANCELLED"
    assert told.sent == [(cancelling.id, "cancelled")]


def test_a_job_cancelled_for_want_of_capacity_fails_naming_the_queue_and_the_shortage():
    cancelled = {**PASCAL, "Status": "FAILED", "Container": {},
                 "StatusReason": "Canceled by JobStateTimeLimit action due to reason: "
                                 "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY", "Attempts": []}
    error = failures.describe_failure(Reports(), _job(), _cause(cancelled))
    assert error.type == "NoCapacity" and error.stage == "predict"
    assert "queue q-low" in error.message and "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY" in error.message


def test_a_running_batch_job_records_its_log_stream_and_get_reads_the_live_log_until_the_stage_ends():
    from af2jobs.api.routes import job_log
    from af2jobs.awsrun import events
    from af2jobs.layout import log_key, log_stream_artifact
    from tests.fakes import MemoryArtifactStore, MemoryJobRepository

    repo = MemoryJobRepository()
    job = repo.create(_job(state=JobState.QUEUED))
    for move in ("VALIDATING", "MSA", "PREDICTING"):
        job = repo.transition(job.id, {job.state}, JobState(move))
    event = {"detail": {"jobName": f"predict-{job.id}", "jobId": "b-1", "status": "RUNNING",
                        "jobQueue": QUEUES["low"], "parameters": {"job_id": job.id},
                        "container": {"command": ["python", "-m", "af2jobs.awsrun.batch", "predict"],
                                      "logStreamName": "predict/default/abc"}}}
    assert events.record_batch_event(repo, event)["recorded"] is True
    job = repo.get(job.id)
    assert job.artifacts[log_stream_artifact("predict")] == "predict/default/abc"

    class Live:
        def tail(self, job, lines):
            return ["live line"] if job.artifacts.get(log_stream_artifact("predict")) else None

    class Api:
        def __init__(self, logs):
            self.logs, self.store = logs, MemoryArtifactStore()
            self.store.put_bytes(log_key(job.id), b"stored line\n")

    assert job_log(Api(Live()), job) == ["live line"]
    assert job_log(Api(None), job) == ["stored line"]  # the local server: its stored log is written as it goes
