"""moto running the REAL state machine (statemachine/prediction.asl.json) with the REAL Lambda handlers
(functions/*/app.py) and the REAL Batch entrypoint (python -m af2jobs.awsrun.batch), in this process.

What moto does not do, and what stands in for it here (each a small patch, applied per test):

- Lambda: moto's Docker-less Lambda answers every invoke with a canned payload. `LambdaDispatch` routes an invoke
  to the handler of functions/<name>/app.py and answers as the Lambda runtime does: the return value as JSON, or
  FunctionError "Unhandled" with {"errorType": <exception class name>, "errorMessage": ...}, which Step Functions
  turns into the error name that Retry/Catch match.
- Step Functions -> Batch parameters: Step Functions takes the Batch API's request in PascalCase and returns its
  responses in PascalCase; moto's port of LocalStack's interpreter leaves that normalisation out (a no-op), so
  boto3 would silently drop every PascalCase member. `_normalise_batch` restores it from botocore's Batch model,
  as LocalStack's original does: the ASL's Parameters become camelCase members (map values such as
  Parameters.job_id untouched), and the SubmitJob/DescribeJobs responses (a failure's Cause included) come back
  PascalCase.
- Batch: moto's Docker-less Batch marks every job SUCCEEDED at once. `BatchRunner` makes a submitted job RUNNING
  and runs its container command in a thread: the job definition's command (with Ref::job_id substituted) is
  `python -m af2jobs.awsrun.batch ...`, run as `af2jobs.awsrun.batch.run(...)` in this process under the container's environment
  (the job definition's and the overrides', AWS_BATCH_JOB_ID included). Its exit code ends the job: SUCCEEDED for
  0, else FAILED with "Essential container in task exited" and the exit code in the container and attempt details
  (moto's DescribeJobs drops the exit code; it is put back). TerminateJob stands in for SIGTERM: it sets the stop
  event that the entrypoint's SIGTERM handler sets in a container.
- Fair share: moto's Batch task passes only the SubmitJob parameters of its interpreter's list, which predates
  fair share and leaves out ShareIdentifier (Step Functions hands a task's parameters to the Batch API, which
  takes shareIdentifier); `_share_identifier_passes` adds it. moto accepts a scheduling policy on a queue but
  ignores SubmitJob's shareIdentifier. `FairShareCheck`
  enforces what AWS Batch does (SubmitJob, shareIdentifier: "If the job queue has a fair-share scheduling policy,
  then this parameter must be specified"; "Don't specify this parameter if the job queue doesn't have" one) and
  records each submission's share identifier and tags (`submissions`).
- Retry waits: moto sleeps a Retrier's full IntervalSeconds. The waits are recorded (`retry_waits`), not slept.
- .sync waits: moto looks at a Batch task's job every 0.5 s until it ends; `_look_at_batch_jobs_often`, every 0.05 s.
- boto3's default session: wiring.build makes a new one (setup_default_session) in the service, in each Lambda
  handler and in each container, and so does moto at each mock start; each would parse its clients' service models
  again (~0.4 s a client). `_one_boto3_session` keeps one for the run (fake credentials, the test region).

- Retrying a .sync task: moto reuses one interrupted task-token endpoint for every attempt of a state, so a
  Retry's second attempt of RunMsa would time out at once. `_fresh_wait_per_attempt` gives each attempt its own.

The job definitions are template.yaml's (command, environment), with the /fsx paths pointing at this test's
folders, the small demo database, `--profile tiny` appended (the tiny model, as `af2 serve --profile tiny`) and the
small MSA caps of the other pipeline tests (TEST_SETTINGS).

The stages: given a fake stage runner (tests/statemachine/fake_stages.py), the entrypoint's
jobrun.PipelineStages(settings, overrides) gives that instead, and the containers run the real entrypoint and Batch
stages around it, with no model and no search; given none, the real pipeline (the tiny model on the demo database).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest

from af2jobs import wiring
from af2jobs.adapters.aws import DynamoApiKeyStore, DynamoJobRepository
from af2jobs.settings import Settings
from tests.functional import moto_support
from tests.statemachine.fake_stages import FakeBatchStages

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "statemachine" / "prediction.asl.json"
REGION = moto_support.REGION
ACCOUNT = moto_support.ACCOUNT
STACK = "af2jobs"
FUNCTIONS = {"ValidateFunctionArn": "validate", "JobStateFunctionArn": "jobstate", "NotifyFunctionArn": "notify"}
GPU_QUEUES = ("low", "mid", "high", "p4")
# The tiny model with the MSA caps of the other pipeline tests (tests/functional/test_worker.py): same shapes, so
# the model compiles once per test session.
# UNTRAINED runs allowed, as a stack deployed with AllowUntrained=true for a smoke test.
TEST_SETTINGS = {"AF2_CPUS": "2", "AF2_MAX_MSA_CLUSTERS": "16", "AF2_MAX_EXTRA_MSA": "32", "AF2_ALLOW_UNTRAINED": "true"}
ESSENTIAL_EXITED = "Essential container in task exited"


def _lambda_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-{name}"


# ---------------------------------------------------------------------------------------------------------------
# Lambda


class LambdaContext:
    memory_limit_in_mb = 512
    function_version = "$LATEST"

    def __init__(self, name: str) -> None:
        self.function_name = f"{STACK}-{name}"
        self.invoked_function_arn = _lambda_arn(name)
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class LambdaDispatch:
    """Invokes of this stack's functions go to their real handlers."""

    handlers: dict[str, Callable[[dict, Any], Any]]
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def invoke(self, backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any,
               response_headers: dict[str, str]) -> bytes:
        name = function_name.rsplit(":", 1)[-1].removeprefix(f"{STACK}-")
        handler = self.handlers[name]  # a KeyError here is a definition that names an unknown function
        event = json.loads(body or "{}")
        self.calls.append((name, event))
        try:
            result = handler(event, LambdaContext(name))
        except Exception as exc:  # the Lambda runtime's answer for an unhandled exception
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc),
                               "stackTrace": traceback.format_tb(exc.__traceback__)}).encode()
        return json.dumps(result).encode()


# ---------------------------------------------------------------------------------------------------------------
# Step Functions <-> Batch casing


@functools.cache  # a botocore session parses the service's model (~0.1 s); every Batch task asks twice
def _operation(service: str, snake_name: str) -> Any:
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    (name,) = [op for op in model.operation_names if xform_name(op) == snake_name]
    return model.operation_model(name)


def _normalise_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch import (
        StateTaskServiceBatch,
    )

    def parameters(self, parameters, boto_service_name=None, service_action_name=None):
        action = self._get_boto_service_action(service_action_name)
        shape = _operation(self._get_boto_service_name(boto_service_name), action).input_shape
        self._to_boto_request(parameters, shape)

    def response(self, response, boto_service_name=None, service_action_name=None):
        action = self._get_boto_service_action(service_action_name)
        shape = _operation(self._get_boto_service_name(boto_service_name), action).output_shape
        self._from_boto_response(response, shape)

    monkeypatch.setattr(StateTaskServiceBatch, "_normalise_parameters", parameters)
    monkeypatch.setattr(StateTaskServiceBatch, "_normalise_response", response)


def _share_identifier_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_batch

    bindings = state_task_service_batch._SUPPORTED_API_PARAM_BINDINGS
    monkeypatch.setitem(bindings, "submitjob", {*bindings["submitjob"], "ShareIdentifier"})


def _fresh_wait_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto gives a .sync Batch task a task-token endpoint (which Step Functions has no use for with .sync), made
    once per state and interrupted when an attempt ends; a Retry's next attempt then finds it interrupted and
    times out at once (States.Timeout). Each attempt gets a fresh endpoint, as each attempt waits afresh."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch import (
        StateTaskServiceBatch,
    )
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackEndpoint

    original = StateTaskServiceBatch._eval_integration_pattern

    def each_attempt(self, env, *args, **kwargs):
        token = env.states.context_object.context_object_data.get("Task", {}).get("Token")
        if token is not None and self.resource.condition == ResourceCondition.Sync:
            env.callback_pool_manager._pool[token] = CallbackEndpoint(callback_id=token)
        return original(self, env, *args, **kwargs)

    monkeypatch.setattr(StateTaskServiceBatch, "_eval_integration_pattern", each_attempt)


# ---------------------------------------------------------------------------------------------------------------
# Batch


@dataclass
class ContainerRun:
    """One Batch job's container, as the runner ran it."""

    batch_job_id: str
    job_name: str
    queue: str  # the queue's name
    stage: str
    argv: list[str]
    environment: dict[str, str]
    resource_requirements: list[dict[str, str]]  # the submission's ContainerOverrides
    exit_code: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)


class BatchRunner:
    """Runs submitted Batch jobs' containers: the af2jobs.awsrun.batch entrypoint in this process, one at a time."""

    def __init__(self) -> None:
        self.runs: list[ContainerRun] = []
        self.crashes: list[str] = []
        self._threads: list[threading.Thread] = []
        self._one_at_a_time = threading.Lock()  # os.environ is the container's while a run lasts

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from moto.batch.models import Job
        from moto.batch_simple.models import BatchSimpleBackend

        runner = self

        def start(backend: Any, include_start_attempt: bool, job: Job) -> None:
            backend.backend._jobs[job.job_id] = job
            job.job_started_at = job.job_created_at
            job.log_stream_name = job._stream_name
            job._start_attempt()
            job.status = "RUNNING"
            thread = threading.Thread(target=runner._run, args=(job,), name=f"batch-{job.job_id}", daemon=True)
            runner._threads.append(thread)
            thread.start()

        original_details = Job._container_details

        def container_details(job: Job) -> dict[str, Any]:
            # moto's DescribeJobs replaces the container block that held the exit code; Batch reports it there.
            details = original_details(job)
            if job.job_stopped and job.exit_code is not None:
                details["exitCode"] = job.exit_code
            return details

        monkeypatch.setattr(BatchSimpleBackend, "_mark_job_as_finished", start)
        monkeypatch.setattr(Job, "_container_details", container_details)

    def _run(self, job: Any) -> None:
        with self._one_at_a_time:
            run = self._container(job)
            self.runs.append(run)
            watcher = threading.Thread(target=self._watch, args=(job, run), daemon=True)
            watcher.start()
            try:
                with mock.patch.dict(os.environ, run.environment):
                    from af2jobs.awsrun.batch import run as batch_run

                    run.exit_code = batch_run(run.argv, stop=run.stop, batch_job_id=run.batch_job_id)
            except BaseException:  # a crash of the entrypoint itself: the test fails at teardown
                self.crashes.append(traceback.format_exc())
                run.exit_code = 1
            self._finish(job, run)
            watcher.join(5)

    def _container(self, job: Any) -> ContainerRun:
        environment = {e["name"]: e["value"] for e in job._get_container_property("environment", [])}
        command = job._add_parameters_to_command(job._get_container_property("command", []))
        assert command[:3] == ["python", "-m", "af2jobs.awsrun.batch"], command
        return ContainerRun(job.job_id, job.job_name, job.job_queue.name, command[3], command[3:], environment,
                            job.container_overrides.get("resourceRequirements", []))

    @staticmethod
    def _watch(job: Any, run: ContainerRun) -> None:
        # TerminateJob (job.stop) is SIGTERM to the container; its entrypoint's handler sets the stop event.
        while run.exit_code is None:
            if job.stop:
                run.stop.set()
                return
            time.sleep(0.05)

    @staticmethod
    def _finish(job: Any, run: ContainerRun) -> None:
        job.exit_code = run.exit_code
        if job.latest_attempt is not None:
            job.latest_attempt["container"]["exitCode"] = run.exit_code
        if run.exit_code != 0 and job.job_stopped_reason is None:
            job.job_stopped_reason = ESSENTIAL_EXITED
        job._mark_stopped(success=run.exit_code == 0 and not job.stop)

    def join(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"Batch containers still running: {alive}"


# ---------------------------------------------------------------------------------------------------------------
# Fair share


@dataclass
class Submission:
    """One SubmitJob call as Batch received it."""

    job_name: str
    queue: str
    share_identifier: str | None
    tags: dict[str, str]


class FairShareCheck:
    """SubmitJob as AWS Batch takes it on fair-share and FIFO queues (moto drops shareIdentifier unchecked)."""

    def __init__(self) -> None:
        self.submissions: list[Submission] = []

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from moto.batch.exceptions import ClientException
        from moto.batch.responses import BatchResponse

        check = self
        original = BatchResponse.submitjob

        def submitjob(response: Any) -> str:
            share, queue_id = response._get_param("shareIdentifier"), response._get_param("jobQueue")
            queue = response.batch_backend.get_job_queue(queue_id)
            fair = queue is not None and queue.schedule_policy is not None
            if fair and not share:
                raise ClientException(f"job queue {queue_id} has a scheduling policy: shareIdentifier is required")
            if share and not fair:
                raise ClientException(f"job queue {queue_id} has no scheduling policy: give no shareIdentifier")
            check.submissions.append(Submission(response._get_param("jobName"), queue.name if queue else queue_id,
                                                share, response._get_param("tags") or {}))
            return original(response)

        monkeypatch.setattr(BatchResponse, "submitjob", submitjob)


# ---------------------------------------------------------------------------------------------------------------
# Waits


def _record_retry_waits(monkeypatch: pytest.MonkeyPatch, waits: list[float]) -> None:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class Clock:
        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    monkeypatch.setattr(retrier_decl, "time", Clock)


def _look_at_batch_jobs_often(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

    monkeypatch.setattr(state_task_service_callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", 0.05)


# ---------------------------------------------------------------------------------------------------------------
# boto3's default session


@functools.cache
def _boto3_session() -> Any:
    import boto3

    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def _one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    def setup_default_session(**kwargs: Any) -> None:
        assert set(kwargs) <= {"region_name"} and kwargs.get("region_name", REGION) == REGION, kwargs
        boto3.DEFAULT_SESSION = _boto3_session()

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", _boto3_session())
    monkeypatch.setattr(boto3, "setup_default_session", setup_default_session)


# ---------------------------------------------------------------------------------------------------------------
# The platform


@functools.cache
def _template() -> dict[str, Any]:
    from cfnlint.decode import decode

    template, matches = decode(str(ROOT / "template.yaml"))
    assert not matches, [str(m) for m in matches]
    return json.loads(json.dumps(template))


def _template_job_definition(logical_id: str) -> dict[str, Any]:
    return _template()["Resources"][logical_id]["Properties"]


@dataclass
class Platform:
    """One stack's worth of AWS resources in moto, the functions loaded, and the service that clients call."""

    services: wiring.Services
    sfn: Any
    batch: Any
    s3: Any
    sqs: Any
    bucket: str
    state_machine_arn: str
    queue_arns: dict[str, str]
    inbox_url: str
    runner: BatchRunner
    fair_share: FairShareCheck
    dispatch: LambdaDispatch
    retry_waits: list[float]
    handlers: dict[str, ModuleType]
    data_dir: Path
    stages: FakeBatchStages | None  # None: the real pipeline runs in the containers

    # -- waiting ---------------------------------------------------------------------------------------------

    def wait_execution(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        arn = self.execution_arn(job_id)
        deadline = time.monotonic() + timeout
        while True:
            execution = self.sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING":
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {job_id} still RUNNING after {timeout} s: {self.states(job_id)}")
            time.sleep(0.1)

    def wait_for(self, what: Callable[[], Any], timeout: float = 120, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message or what}")
            time.sleep(0.05)

    # -- looking ---------------------------------------------------------------------------------------------

    def execution_arn(self, job_id: str) -> str:
        head, _, machine = self.state_machine_arn.partition(":stateMachine:")
        return f"{head}:execution:{machine}:{job_id}"

    def history(self, job_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": self.execution_arn(job_id)}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events += page["events"]
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def states(self, job_id: str) -> list[str]:
        """The states the execution entered, in order."""
        return [e["stateEnteredEventDetails"]["name"] for e in self.history(job_id)
                if e["type"].endswith("StateEntered")]

    def batch_jobs(self, job_id: str) -> list[dict[str, Any]]:
        """The Batch jobs run for the job, in submission order, as DescribeJobs has them."""
        ids = [r.batch_job_id for r in self.runs(job_id)]
        described = {j["jobId"]: j for j in self.batch.describe_jobs(jobs=ids)["jobs"]} if ids else {}
        return [described[i] for i in ids]

    def runs(self, job_id: str) -> list[ContainerRun]:
        return [r for r in self.runner.runs if r.argv[r.argv.index("--job-id") + 1] == job_id]

    def messages(self) -> list[dict[str, Any]]:
        """The SNS messages so far: their attributes and their JSON document (the sqs protocol's variant)."""
        found = []
        while True:
            page = self.sqs.receive_message(QueueUrl=self.inbox_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not page.get("Messages"):
                return found
            for message in page["Messages"]:
                envelope = json.loads(message["Body"])
                found.append({"subject": envelope.get("Subject"), "data": json.loads(envelope["Message"]),
                              "attributes": {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}})
                self.sqs.delete_message(QueueUrl=self.inbox_url, ReceiptHandle=message["ReceiptHandle"])

    def get_object(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _definition(substitutions: Mapping[str, str]) -> str:
    text = DEFINITION.read_text()
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, "a DefinitionSubstitution the test does not provide"
    return text


def _job_queues(batch: Any, iam: Any) -> dict[str, str]:
    """The five queues, each with template.yaml's fair-share scheduling policy."""
    role = iam.create_role(RoleName="batch-service", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"{STACK}-compute", type="UNMANAGED", state="ENABLED", serviceRole=role,
    )["computeEnvironmentArn"]
    fair_share = _template()["Resources"]["FairShare"]["Properties"]["FairsharePolicy"]
    policy = batch.create_scheduling_policy(name=f"{STACK}-fair-share", fairsharePolicy={
        "shareDecaySeconds": fair_share["ShareDecaySeconds"], "computeReservation": fair_share["ComputeReservation"],
    })["arn"]
    queues = {}
    for name in ("msa", *GPU_QUEUES):
        queues[name] = batch.create_job_queue(
            jobQueueName=f"{STACK}-{name}", state="ENABLED", priority=1, schedulingPolicyArn=policy,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )["jobQueueArn"]
    return queues


def _job_definition(batch: Any, logical_id: str, name: str, environment: dict[str, str]) -> str:
    """template.yaml's job definition: its command (plus --profile tiny) and environment (plus TEST_SETTINGS)."""
    container = _template_job_definition(logical_id)["ContainerProperties"]
    names = [e["Name"] for e in container["Environment"]] + list(TEST_SETTINGS)
    assert set(names) <= set(environment), f"the test gives no value for {set(names) - set(environment)}"
    return batch.register_job_definition(
        jobDefinitionName=name, type="container",
        containerProperties={
            "image": f"{name}:test",
            "command": [*container["Command"], "--profile", "tiny"],
            "environment": [{"name": n, "value": environment[n]} for n in names],
            "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
        },
    )["jobDefinitionArn"]


def _stages_in_containers(monkeypatch: pytest.MonkeyPatch, stages: FakeBatchStages) -> None:
    """af2jobs.awsrun.batch.run builds jobrun.PipelineStages(settings, overrides) in each container: the fake
    instead, one for the test, so that its switches count a stage's runs across containers."""
    from af2jobs import jobrun

    monkeypatch.setattr(jobrun, "PipelineStages", stages.in_container)


@contextmanager
def platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_db_root: Path, shared_cache: Path,
             stages: FakeBatchStages | None = None) -> Iterator[Platform]:
    config = {"stepfunctions": {"execute_state_machine": True}, "batch": {"use_docker": False},
              "lambda": {"use_docker": False}}
    with moto_support.moto_aws(monkeypatch, config=config):
        _one_boto3_session(monkeypatch)
        client = moto_support.client
        sfn, batch, s3, sqs, sns = (client(s) for s in ("stepfunctions", "batch", "s3", "sqs", "sns"))
        dynamodb = client("dynamodb")
        table, keys_table, bucket = f"{STACK}-jobs", f"{STACK}-keys", f"{STACK}-results"
        dynamodb.create_table(**DynamoJobRepository.table_definition(table))
        dynamodb.create_table(**DynamoApiKeyStore.table_definition(keys_table))
        s3.create_bucket(Bucket=bucket)
        topic = sns.create_topic(Name=STACK)["TopicArn"]
        inbox_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
        machine_arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STACK}-prediction"

        env = {
            "AF2_MODE": "aws", "AF2_REGION": REGION, "AF2_JOBS_TABLE": table, "AF2_KEYS_TABLE": keys_table,
            "AF2_BUCKET": bucket, "AF2_STATE_MACHINE_ARN": machine_arn, "AF2_TOPIC_ARN": topic,
            "AF2_BATCH_LOG_GROUP": f"/af2jobs/{STACK}/batch",
            "POWERTOOLS_SERVICE_NAME": "af2jobs", "POWERTOOLS_TRACE_DISABLED": "true",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        # What the containers see under /fsx, in this test's folders (the shared caches keep compiles).
        data_dir = tmp_path / "fsx" / "af2jobs"
        for cache in ("params-untrained", "jax"):
            (shared_cache / cache).mkdir(exist_ok=True)
            (data_dir / "cache").mkdir(parents=True, exist_ok=True)
            (data_dir / "cache" / cache).symlink_to(shared_cache / cache)
        container_env = {
            **env, "PYTHONUNBUFFERED": "1", "AF2_DB_ROOT": str(demo_db_root),
            "AF2_PARAMS_DIR": str(tmp_path / "fsx" / "no-params"), "AF2_DATA_DIR": str(data_dir),
            "JAX_COMPILATION_CACHE_DIR": str(shared_cache / "jax"), "AF2_UNIFIED_MEMORY": "false",
            "AWS_DEFAULT_REGION": REGION, **TEST_SETTINGS,
        }
        queue_arns = _job_queues(batch, client("iam"))
        _job_definition(batch, "MsaJobDefinition", f"{STACK}-msa", container_env)
        _job_definition(batch, "PredictJobDefinition", f"{STACK}-predict", container_env)

        substitutions = {
            **{name: _lambda_arn(function) for name, function in FUNCTIONS.items()},
            # By name, as template.yaml substitutes them: Batch takes the latest active revision.
            "MsaJobQueueArn": queue_arns["msa"], "MsaJobDefinitionName": f"{STACK}-msa",
            "PredictJobDefinitionName": f"{STACK}-predict",
            "GpuQueueLowArn": queue_arns["low"], "GpuQueueMidArn": queue_arns["mid"],
            "GpuQueueHighArn": queue_arns["high"], "GpuQueueP4Arn": queue_arns["p4"], "StackName": STACK,
        }
        created = sfn.create_state_machine(
            name=f"{STACK}-prediction", definition=_definition(substitutions),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/{STACK}-states",
        )["stateMachineArn"]
        assert created == machine_arn

        handlers = {name: moto_support.load_function(name) for name in ("validate", "jobstate", "notify", "events")}
        dispatch = LambdaDispatch({name: module.handler for name, module in handlers.items()})
        from moto.awslambda_simple.models import LambdaSimpleBackend

        monkeypatch.setattr(LambdaSimpleBackend, "invoke",
                            lambda backend, *args: dispatch.invoke(backend, *args))
        _normalise_batch(monkeypatch)
        _share_identifier_passes(monkeypatch)
        _fresh_wait_per_attempt(monkeypatch)
        runner = BatchRunner()
        runner.patch(monkeypatch)
        fair_share = FairShareCheck()
        fair_share.patch(monkeypatch)
        waits: list[float] = []
        _record_retry_waits(monkeypatch, waits)
        _look_at_batch_jobs_often(monkeypatch)
        if stages is not None:
            _stages_in_containers(monkeypatch, stages)

        services = wiring.build(Settings())
        world = Platform(services, sfn, batch, s3, sqs, bucket, machine_arn, queue_arns, inbox_url, runner,
                         fair_share, dispatch, waits, handlers, data_dir, stages)
        try:
            yield world
        finally:
            # Nothing of this test may outlive its moto account: executions end, containers stop.
            for execution in sfn.list_executions(stateMachineArn=machine_arn)["executions"]:
                if execution["status"] == "RUNNING":
                    sfn.stop_execution(executionArn=execution["executionArn"], error="TestEnded")
            runner.join()
            services.close()
        assert not runner.crashes, runner.crashes[0]
