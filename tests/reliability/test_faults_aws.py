"""Faults injected into the REAL state machine executed by moto (tests/statemachine/sfn_support.py: the real Lambda
handlers, the real Batch entrypoint, the tiny model): throttling and service errors of Lambda, DynamoDB and Batch,
a failing Batch job, and Spot reclaims. Transient ones are absorbed by a Retry (the definition's, Batch's
RetryStrategy, or the AWS SDK's own); persistent ones end with the job FAILED with a reason and a "failed"
notification on the topic, never RUNNING or stuck, and with no outputs under jobs/<id>/output/.

What stands in for AWS here, beyond sfn_support.py:
- A Lambda service error is the Invoke API answering an error (429 TooManyRequestsException, 500
  ServiceException) instead of running the function. Step Functions names it "Lambda.<code>"; moto's interpreter
  names every one "Exception", so `lambda_service_error_names` restores the "Lambda." names.
- A Batch API error is SubmitJob answering an error; moto names it "Batch.<code>", as Step Functions does.
- DynamoDB throttling is UpdateItem answering ProvisionedThroughputExceededException while a chosen function runs.
- A Spot reclaim ends a Batch attempt with the status reason Batch gives it ("Host EC2 (instance i-...)
  terminated.") and no exit code; template.yaml's RetryStrategy (read as data, evaluated as Batch does) decides
  whether Batch starts another attempt of the same job."""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from af2jobs.models import Job, JobState, Principal

from af2jobs.request import JobRequest
from tests.conftest import UBIQUITIN
from tests.statemachine.sfn_support import Platform, _template_job_definition, platform

pytestmark = pytest.mark.pipeline

S = JobState
ANN = Principal("ann")
RECLAIMED = "Host EC2 (instance i-0abc1234def567890) terminated."


@pytest.fixture
def aws(monkeypatch, tmp_path, demo_db_root, shared_cache) -> Iterator[Platform]:
    lambda_service_error_names(monkeypatch)
    with platform(monkeypatch, tmp_path, demo_db_root, shared_cache) as world:
        yield world


def submit(aws: Platform, **fields: Any) -> Job:
    body = {"fasta": "ubq", "sequence": UBIQUITIN, "model_names": ["model_1"], "strategy": "best",
            "models_to_relax": "none", **fields}
    return aws.services.service.submit(ANN, JobRequest.parse(body))


def finish(aws: Platform, job: Job, status: str) -> Job:
    execution = aws.wait_execution(job.id)
    assert execution["status"] == status, (execution, aws.states(job.id), aws.services.repo.get(job.id).error)
    aws.runner.join()
    return aws.services.repo.get(job.id)


def notified(aws: Platform, job: Job) -> dict[str, dict]:
    return {m["data"]["event"]: m for m in aws.messages() if m["data"]["job_id"] == job.id}


def assert_failed_and_notified(aws: Platform, job: Job) -> Job:
    failed = finish(aws, job, "FAILED")
    assert failed.state is S.FAILED and failed.error is not None and failed.error.message
    assert aws.states(job.id)[-3:] == ["MarkFailed", "NotifyFailure", "Failed"]
    message = notified(aws, job)["failed"]
    assert message["attributes"]["state"] == "FAILED"
    assert message["data"]["error"]["type"] == failed.error.type
    assert aws.keys(f"jobs/{job.id}/output/") == []
    return failed


def succeeded(aws: Platform, job: Job) -> Job:
    done = finish(aws, job, "SUCCEEDED")
    assert done.state is S.SUCCEEDED, done.error
    assert f"jobs/{job.id}/output/ubq/ranked_0.pdb" in aws.keys(f"jobs/{job.id}/output/")
    assert "succeeded" in notified(aws, job)
    return done


# ---------------------------------------------------------------------------------------------------------------
# Injection


def lambda_service_error_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Invoke that the Lambda service answers with an error is "Lambda.<code>" in Step Functions (the names the
    definition's Retry lists); moto's interpreter calls each one "Exception"."""
    m = importlib.import_module("moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda")
    original = m.StateTaskLambda._from_error

    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        if not isinstance(ex, ClientError):
            return original(self, env, ex)
        name = f"Lambda.{ex.response['Error']['Code']}"
        details = m.LambdaFunctionFailedEventDetails(error=name, cause=ex.response["Error"]["Message"])
        return m.FailureEvent(env=env, error_name=m.CustomErrorName(name),
                              event_type=m.HistoryEventType.LambdaFunctionFailed,
                              event_details=m.EventDetails(lambdaFunctionFailedEventDetails=details))

    monkeypatch.setattr(m.StateTaskLambda, "_from_error", from_error)


def api_error(code: str, status: int, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    error = JsonRESTError(code, message)
    error.code = status
    return error


class Faults:
    """Counts down the errors to answer: `plan` is a list of errors (None: answer normally), used up in order; an
    empty plan with `forever` set keeps answering that error."""

    def __init__(self, plan: list[Exception | None], forever: Exception | None = None) -> None:
        self.plan = list(plan)
        self.forever = forever
        self.raised = 0

    def next(self) -> Exception | None:
        error = self.plan.pop(0) if self.plan else self.forever
        self.raised += error is not None
        return error


def failing_invokes(monkeypatch: pytest.MonkeyPatch, aws: Platform, function: str, faults: Faults) -> None:
    dispatch = aws.dispatch
    invoke = dispatch.invoke

    def maybe_failing(backend: Any, function_name: str, *args: Any) -> bytes:
        if function_name.endswith(f"-{function}") and (error := faults.next()) is not None:
            raise error
        return invoke(backend, function_name, *args)

    monkeypatch.setattr(dispatch, "invoke", maybe_failing)


def throttled_writes(monkeypatch: pytest.MonkeyPatch, aws: Platform, function: str, faults: Faults) -> None:
    """DynamoDB's UpdateItem answers faults' errors while `function` runs (the job record's state changes)."""
    from moto.dynamodb.models import DynamoDBBackend

    running: list[str] = []
    dispatch = aws.dispatch
    invoke = dispatch.invoke

    def tracking(backend: Any, function_name: str, *args: Any) -> bytes:
        running.append(function_name.rsplit("-", 1)[-1])
        try:
            return invoke(backend, function_name, *args)
        finally:
            running.pop()

    update_item = DynamoDBBackend.update_item

    def maybe_throttled(self: Any, *args: Any, **kwargs: Any) -> Any:
        if running and running[-1] == function and (error := faults.next()) is not None:
            raise error
        return update_item(self, *args, **kwargs)

    monkeypatch.setattr(dispatch, "invoke", tracking)
    monkeypatch.setattr(DynamoDBBackend, "update_item", maybe_throttled)


def throughput_exceeded() -> Exception:
    from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, DynamodbException

    return DynamodbException(ERROR_TYPE_PREFIX + "ProvisionedThroughputExceededException",
                             "The level of configured provisioned throughput for the table was exceeded.")


def failing_submits(monkeypatch: pytest.MonkeyPatch, stage: str, faults: Faults) -> None:
    from moto.batch_simple.models import BatchSimpleBackend  # moto's Docker-less Batch, as sfn_support uses

    submit_job = BatchSimpleBackend.submit_job

    def maybe_failing(self: Any, job_name: str, *args: Any, **kwargs: Any) -> Any:
        if job_name.startswith(f"{stage}-") and (error := faults.next()) is not None:
            raise error
        return submit_job(self, job_name, *args, **kwargs)

    monkeypatch.setattr(BatchSimpleBackend, "submit_job", maybe_failing)


def retry_action(strategy: dict[str, Any], status_reason: str | None, reason: str | None,
                 exit_code: int | None) -> str:
    """AWS Batch's EvaluateOnExit: the first condition whose given patterns all match decides; none matching
    means RETRY."""
    def matches(pattern: str | None, value: str | None) -> bool:
        return pattern is None or (value is not None and fnmatch.fnmatchcase(value, pattern))

    for condition in strategy.get("EvaluateOnExit", []):
        code = None if exit_code is None else str(exit_code)
        if (matches(condition.get("OnStatusReason"), status_reason) and matches(condition.get("OnReason"), reason)
                and matches(condition.get("OnExitCode"), code)):
            return condition["Action"].upper()
    return "RETRY"


def spot_reclaims(monkeypatch: pytest.MonkeyPatch, aws: Platform, stage: str, reclaims: int) -> list[str]:
    """The first `reclaims` attempts of the stage's Batch jobs lose their Spot instance before the container exits;
    the job definition's RetryStrategy decides on another attempt. Returns the decisions taken."""
    logical_id = {"msa": "MsaJobDefinition", "predict": "PredictJobDefinition"}[stage]
    strategy = _template_job_definition(logical_id)["RetryStrategy"]
    run = aws.runner._run
    left = [reclaims]
    decisions: list[str] = []

    def run_on_spot(job: Any) -> None:
        command = job._get_container_property("command", [])
        while command[3] == stage and left[0] > 0:
            left[0] -= 1
            job.latest_attempt["statusReason"] = RECLAIMED
            action = retry_action(strategy, RECLAIMED, None, None)
            if action == "RETRY" and len(job.attempts) < strategy["Attempts"]:
                decisions.append("RETRY")
                job._start_attempt()
                continue
            decisions.append("EXIT")
            job.job_stopped_reason = RECLAIMED
            job._mark_stopped(success=False)
            return
        run(job)

    monkeypatch.setattr(aws.runner, "_run", run_on_spot)
    return decisions


# ---------------------------------------------------------------------------------------------------------------
# Lambda


def test_lambda_throttling_and_service_errors_are_retried_by_the_definition(aws, monkeypatch):
    faults = Faults([api_error("TooManyRequestsException", 429, "Rate Exceeded."),
                     api_error("ServiceException", 500, "Lambda is unavailable")])
    failing_invokes(monkeypatch, aws, "validate", faults)
    job = submit(aws)
    succeeded(aws, job)

    assert faults.raised == 2
    assert aws.states(job.id)[:3] == ["Validate", "MsaCached?", "StartMsa"]
    assert len(aws.retry_waits) == 2  # two waits of Validate's Retry, then the job went on
    errors = [e["lambdaFunctionFailedEventDetails"]["error"] for e in aws.history(job.id)
              if e["type"] == "LambdaFunctionFailed"]
    assert errors == ["Lambda.TooManyRequestsException", "Lambda.ServiceException"]


def test_a_function_throttled_for_good_fails_the_job_after_the_retries_with_the_reason(aws, monkeypatch):
    faults = Faults([], forever=api_error("TooManyRequestsException", 429, "Rate Exceeded."))
    failing_invokes(monkeypatch, aws, "validate", faults)
    job = submit(aws)
    failed = assert_failed_and_notified(aws, job)

    assert faults.raised == 7  # the first call and Validate's 6 retries
    assert len(aws.retry_waits) == 6
    assert (failed.error.type, failed.error.message) == ("Lambda.TooManyRequestsException", "Rate Exceeded.")
    assert aws.runs(job.id) == []  # no compute was started


# ---------------------------------------------------------------------------------------------------------------
# DynamoDB


def test_dynamodb_throttling_is_absorbed_by_the_sdk_retries_inside_the_function(aws, monkeypatch):
    faults = Faults([throughput_exceeded(), throughput_exceeded()])
    throttled_writes(monkeypatch, aws, "validate", faults)
    job = submit(aws)
    succeeded(aws, job)

    assert faults.raised == 2
    assert aws.retry_waits == []  # the SDK's retries, not the definition's


@pytest.mark.reliability_long  # the SDK's 10 attempts back off for about 25 s
def test_dynamodb_throttling_that_outlasts_the_sdk_retries_fails_the_job_with_the_reason(aws, monkeypatch):
    faults = Faults([], forever=throughput_exceeded())
    throttled_writes(monkeypatch, aws, "validate", faults)
    job = submit(aws)
    failed = assert_failed_and_notified(aws, job)

    assert faults.raised == 10  # botocore's attempts for DynamoDB (legacy retry mode), then the function failed
    assert failed.error.type == "ProvisionedThroughputExceededException"
    assert "provisioned throughput" in failed.error.message and failed.error.stage == "queued"
    assert aws.runs(job.id) == []


# ---------------------------------------------------------------------------------------------------------------
# Batch API


def test_batch_submit_throttling_and_server_errors_are_retried_by_the_definition(aws, monkeypatch):
    faults = Faults([api_error("TooManyRequestsException", 429, "Too Many Requests"),
                     api_error("ServerException", 500, "internal error")])
    failing_submits(monkeypatch, "msa", faults)
    job = submit(aws)
    succeeded(aws, job)

    assert faults.raised == 2
    # Both by RunMsa's Retry for the Batch API (5 s, then 10 s, with full jitter), not by its Retry for a failed
    # MSA job (60 s), which stays for a failure of the job itself.
    assert len(aws.retry_waits) == 2 and max(aws.retry_waits) <= 10
    errors = [e["taskFailedEventDetails"]["error"] for e in aws.history(job.id) if e["type"] == "TaskFailed"]
    assert errors == ["Batch.TooManyRequestsException", "Batch.ServerException"]
    assert [r.stage for r in aws.runs(job.id)] == ["msa", "predict"]  # one MSA job: the refused ones never ran


def test_a_batch_api_that_keeps_failing_fails_the_job_with_the_reason(aws, monkeypatch):
    faults = Faults([], forever=api_error("ServerException", 500, "internal error"))
    failing_submits(monkeypatch, "predict", faults)
    job = submit(aws)
    failed = assert_failed_and_notified(aws, job)

    assert faults.raised >= 6  # the first submission and RunPrediction's 5 retries
    assert failed.error.type == "Batch.ServerException" and failed.error.stage == "predict"
    assert "internal error" in failed.error.message
    assert [r.stage for r in aws.runs(job.id)] == ["msa"]


# ---------------------------------------------------------------------------------------------------------------
# Batch jobs


def test_a_prediction_job_that_fails_fails_the_job_with_the_containers_reason(aws, monkeypatch):
    from af2jobs.pipeline import predict

    def broken(self: Any, raw: dict) -> Any:
        raise RuntimeError("INTERNAL: the device was lost")

    monkeypatch.setattr(predict.Predictor, "predict", broken)
    job = submit(aws)
    failed = assert_failed_and_notified(aws, job)

    assert "CheckPredictFailure" in aws.states(job.id)  # not out of memory: no larger queue
    assert (failed.error.type, failed.error.stage) == ("RuntimeError", "predict")
    assert "INTERNAL: the device was lost" in failed.error.message and "exit code 1" in failed.error.message
    assert [j["status"] for j in aws.batch_jobs(job.id)] == ["SUCCEEDED", "FAILED"]


def test_the_job_definitions_retry_a_lost_host_and_nothing_else():
    for logical_id in ("MsaJobDefinition", "PredictJobDefinition"):
        strategy = _template_job_definition(logical_id)["RetryStrategy"]
        assert strategy["Attempts"] >= 2
        assert retry_action(strategy, RECLAIMED, None, None) == "RETRY"
        assert retry_action(strategy, "Host EC2 (instance i-1) terminated.", "x", 137) == "RETRY"
        assert retry_action(strategy, "Essential container in task exited", "x", 1) == "EXIT"
        assert retry_action(strategy, "Essential container in task exited", "x", 75) == "EXIT"  # OOM: larger queue


def test_a_spot_reclaim_of_the_msa_job_is_retried_by_batch_and_the_job_succeeds(aws, monkeypatch):
    decisions = spot_reclaims(monkeypatch, aws, "msa", reclaims=1)
    job = submit(aws)
    succeeded(aws, job)

    assert decisions == ["RETRY"]
    msa = aws.batch_jobs(job.id)[0]
    assert msa["status"] == "SUCCEEDED" and len(msa["attempts"]) == 2
    assert msa["attempts"][0]["statusReason"] == RECLAIMED
    assert aws.retry_waits == []  # Batch's retry, inside one RunMsa step


def test_a_prediction_reclaimed_on_every_attempt_fails_the_job_naming_the_lost_host(aws, monkeypatch):
    decisions = spot_reclaims(monkeypatch, aws, "predict", reclaims=3)
    job = submit(aws)
    failed = assert_failed_and_notified(aws, job)

    assert decisions == ["RETRY", "RETRY", "EXIT"]  # template.yaml: 3 attempts
    assert [r.stage for r in aws.runs(job.id)] == ["msa"]  # no prediction container ever finished
    described = aws.batch.describe_jobs(jobs=_batch_job_ids(aws, f"predict-{job.id}"))["jobs"]
    assert [(d["status"], d.get("statusReason"), len(d["attempts"])) for d in described] == [("FAILED", RECLAIMED, 3)]
    assert [a["statusReason"] for a in described[0]["attempts"]] == [RECLAIMED] * 3
    assert (failed.error.type, failed.error.stage) == ("BatchJobFailed", "predict")
    assert RECLAIMED in failed.error.message


def _batch_job_ids(aws: Platform, name: str) -> list[str]:
    return [summary["jobId"] for arn in aws.queue_arns.values()
            for summary in aws.batch.list_jobs(jobQueue=arn, jobStatus="FAILED")["jobSummaryList"]
            if summary["jobName"] == name]
