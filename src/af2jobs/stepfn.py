"""The tasks of the state machine (statemachine/prediction.asl.json) and the Batch event handler: the core that the
thin Lambda handlers in functions/ call. Light: no JAX; the functions run from the core layer.

    validate(parts, event)          ValidateFunction. QUEUED -> VALIDATING; re-validates the request and its input;
                                    picks the GPU queue and the resources for the request's GPU count; checks the
                                    MSA cache in S3
    job_state(parts, event)         JobStateFunction, by event["action"]:
        "msa"                         VALIDATING -> MSA, before RunMsa
        "predict"                     MSA -> PREDICTING (VALIDATING -> MSA -> PREDICTING on an MSA cache hit)
        "check_predict_failure"       is a failed prediction a GPU out-of-memory that a larger queue may fix?
        "succeeded"                   PREDICTING -> SUCCEEDED, once the published predictions.json is there;
                                      records the job's cost (`measured_cost`: the Batch jobs' run times priced
                                      by af2jobs.cost) and the GPU agent's summary (cost["gpu"])
        "failed"                      -> FAILED with the error and the stage it happened in
    notify(parts, event)            NotifyFunction: the job's succeeded/failed message through the Notifier (SNS)
    record_batch_event(repo, event) BatchEventsFunction: an EventBridge "Batch Job State Change" onto the job

Errors the definition's Retry/Catch match by name (the Lambda runtime reports an exception's class name):
    InvalidJob        the job's request or input does not validate any more         Catch -> MarkFailed, no retry
    JobCancelled      the job was cancelled meanwhile                                Catch -> Cancelled (the
                                                                                     orchestrator finishes it)
    JobStateConflict  the record is in a state this step cannot start from           Catch -> MarkFailed
    OutputsMissing    the prediction reported success without predictions.json       Catch -> MarkFailed
A failed Batch job reaches the definition as States.TaskFailed with the job's description as the Cause;
`batch_failure` reads it. GpuOutOfMemory is the error type a job records when its prediction exits with
EXIT_GPU_OUT_OF_MEMORY (see af2jobs.batch) on the largest queue, or again on the larger one.

Each move of a job and each succeeded job's phase seconds and dollars are also metrics (parts.metrics;
af2jobs.adapters.aws.cloudwatch.METRICS says which), for the dashboard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from af2jobs import errors, jobrun
from af2jobs.batch import EXIT_GPU_OUT_OF_MEMORY, STAGE_STATES
from af2jobs.fasta import FastaRecord
from af2jobs.models import AUTO_QUEUE_LIMITS, TERMINAL, Job, JobError, JobEvent, JobRequest, JobState, Progress
from af2jobs.pipeline.databases import Database
from af2jobs.pipeline.msa import cache_key
from af2jobs.ports import ArtifactStore, JobRepository, Notifier
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

S = JobState
# Smallest GPU memory first: the order `que: auto` tries them in, and the order of the out-of-memory retry.
GPU_QUEUES: tuple[str, ...] = tuple(AUTO_QUEUE_LIMITS)
# Per GPU, the predict job definition's defaults (template.yaml: PredictVcpus, PredictMemoryMiB). A request for
# n GPUs gets n times both, as the seed platform sized its jobs.
VCPUS_PER_GPU = 8
MEMORY_MIB_PER_GPU = 30720
# The stage a failure is recorded under, by the state the job was in.
STAGE_OF_STATE = {S.QUEUED: "queued", S.VALIDATING: "validating", S.MSA: "msa", S.PREDICTING: "predict"}
MAX_MESSAGE = 1000
TIMEOUT = "States.Timeout"
# The GPU agent's summary of the prediction, beside the outputs (batch_image/entrypoint.sh names it).
GPU_SUMMARY = "gpu_summary.json"


# ---------------------------------------------------------------------------------------------------------------
# Named errors


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


# ---------------------------------------------------------------------------------------------------------------
# What the tasks need


class MsaCacheIndex(Protocol):
    def manifest(self) -> list[dict[str, Any]] | None: ...

    def has(self, key: str) -> bool: ...


class FailureReports(Protocol):
    def failure(self, job_id: str, batch_job_id: str) -> dict[str, Any] | None: ...


class Metrics(Protocol):
    def put(self, name: str, value: float, **dimensions: str) -> None: ...


class NoMetrics:
    def put(self, name: str, value: float, **dimensions: str) -> None:
        pass


@dataclass(frozen=True)
class TaskParts:
    settings: Settings
    repo: JobRepository
    store: ArtifactStore
    notifier: Notifier
    msa_cache: MsaCacheIndex
    failures: FailureReports
    metrics: Metrics = field(default_factory=NoMetrics)


def aws_parts(settings: Settings) -> TaskParts:
    """The parts on AWS: wiring.build's repository, store and notifier, and the S3 cache and work area."""
    from af2jobs import wiring
    from af2jobs.adapters.aws.cloudwatch import EmfMetrics
    from af2jobs.adapters.aws.workarea import S3MsaCache, S3Objects, S3WorkArea

    services = wiring.build(settings)
    objects = S3Objects(settings.bucket)
    return TaskParts(settings, services.repo, services.store, services.notifier, S3MsaCache(objects),
                     S3WorkArea(objects), EmfMetrics())


def log_keys(event: Mapping[str, Any]) -> dict[str, str]:
    """The keys every log line of a task carries (Powertools Logger.append_keys)."""
    return {name: str(event[name]) for name in ("job_id", "execution") if event.get(name)}


# ---------------------------------------------------------------------------------------------------------------
# Moving the job record


def _job_id(event: Mapping[str, Any]) -> str:
    job_id = event.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJob(f"the task input has no job_id: {sorted(event)}")
    return job_id


def _refuse_cancelled(job: Job) -> None:
    if job.state in (S.CANCELLING, S.CANCELLED):
        raise JobCancelled(f"job {job.id} is {job.state.value}")


def _transition(repo: JobRepository, job_id: str, expected: Collection[JobState], to: JobState, **changes: Any) -> Job:
    """A conditional move; a lost race becomes JobCancelled when a cancel won it, JobStateConflict otherwise."""
    try:
        return repo.transition(job_id, expected, to, **changes)
    except errors.ConflictError as exc:
        current = repo.get(job_id)
        _refuse_cancelled(current)
        raise JobStateConflict(exc.message) from None


def _metric(parts: TaskParts, name: str, value: float, **dimensions: str) -> None:
    # A metric that cannot be written is logged: the job's record, not the dashboard, is what must be right.
    try:
        parts.metrics.put(name, value, **dimensions)
    except Exception:
        log.exception("metric %s not published", name)


def _move(parts: TaskParts, job_id: str, expected: Collection[JobState], to: JobState, **changes: Any) -> Job:
    """_transition, counted in the JobsEntered metric."""
    job = _transition(parts.repo, job_id, expected, to, **changes)
    _metric(parts, "JobsEntered", 1, State=to.value)
    return job


def _update(repo: JobRepository, job_id: str, expected: Collection[JobState], **changes: Any) -> Job:
    try:
        return repo.update(job_id, expected_from=expected, **changes)
    except errors.ConflictError as exc:
        _refuse_cancelled(repo.get(job_id))
        raise JobStateConflict(exc.message) from None


# ---------------------------------------------------------------------------------------------------------------
# Validate


def validate(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """QUEUED -> VALIDATING, then check the job again and plan its run. Input: job_id, and queues (GPU queue name
    -> ARN, from the definition's substitutions). Output: see `_plan`."""
    job_id = _job_id(event)
    job = parts.repo.get(job_id)
    _refuse_cancelled(job)
    if job.state is S.QUEUED:
        job = _move(parts, job_id, {S.QUEUED}, S.VALIDATING,
                    artifacts={"log.txt": f"jobs/{job_id}/log.txt"},
                    progress=Progress(stage="validating", message="checking the request and its input"))
    elif job.state is not S.VALIDATING:  # VALIDATING: this task is being retried after a lost answer
        raise JobStateConflict(f"job {job_id} is {job.state.value}; Validate starts QUEUED jobs")
    request, records = _revalidate(parts, job)
    plan = _plan(request, records, event["queues"], msa_cached(parts.msa_cache, records, parts.settings))
    message = (f"{len(records)} record(s), longest {plan['longest']}; GPU queue {plan['queue']}, "
               f"{plan['gpu']} GPU(s); MSA {'cached' if plan['msa_cached'] else 'to compute'}")
    _update(parts.repo, job_id, {S.VALIDATING}, progress=Progress(stage="validating", message=message))
    log.info("validated: %s", message)
    return plan


def _revalidate(parts: TaskParts, job: Job) -> tuple[JobRequest, list[FastaRecord]]:
    """The request through the one schema again, and its stored input parsed with today's limits."""
    try:
        request = JobRequest.parse(job.request.model_dump(mode="json"))
        records = jobrun.read_records(parts.store, job, parts.settings.max_length)
    except (errors.ValidationError, errors.NotFoundError) as exc:
        raise InvalidJob(exc.message) from None
    return request, records


def next_queue(queue: str) -> str | None:
    """The next larger GPU queue, or None for the largest."""
    index = GPU_QUEUES.index(queue)
    return GPU_QUEUES[index + 1] if index + 1 < len(GPU_QUEUES) else None


def _plan(request: JobRequest, records: list[FastaRecord], queue_arns: Mapping[str, str],
          cached: bool) -> dict[str, Any]:
    longest = max(len(r.sequence) for r in records)
    queue = request.queue_for(longest)
    larger = next_queue(queue)
    vcpus, memory = VCPUS_PER_GPU * request.gpu, MEMORY_MIB_PER_GPU * request.gpu
    return {
        "msa_cached": cached,
        "records": len(records),
        "longest": longest,
        "queue": queue,
        "queue_arn": queue_arns[queue],
        "next_queue": larger,
        "next_queue_arn": queue_arns[larger] if larger is not None else None,
        "gpu": request.gpu,
        "vcpus": vcpus,
        "memory": memory,
        # ContainerOverrides.ResourceRequirements of the predict job, as Batch takes them (values are strings).
        "resources": [
            {"Type": "GPU", "Value": str(request.gpu)},
            {"Type": "VCPU", "Value": str(vcpus)},
            {"Type": "MEMORY", "Value": str(memory)},
        ],
    }


def manifest_databases(index: MsaCacheIndex) -> list[Database] | None:
    """The databases the latest MSA job searched, as the cache key needs them; None when unknown or unreadable."""
    entries = index.manifest()
    if not entries:
        return None
    try:
        return [Database(name=e["name"], path=Path(e["path"]), tool=e["tool"], version=e["version"],
                         size_bytes=int(e["size_bytes"]), sequences=e.get("sequences")) for e in entries]
    except (KeyError, TypeError, ValueError):
        log.warning("the MSA cache manifest is not a list of databases; treating every MSA as uncached")
        return None


def msa_cached(index: MsaCacheIndex, records: list[FastaRecord], settings: Settings) -> bool:
    """Whether S3 holds an MSA for every record, keyed as the MSA job would key it today. The manifest describes
    the databases of the latest MSA job; after a database reload the first job searches and refreshes it (and the
    predict stage recomputes the key from the databases it sees, so a stale manifest costs time, never results)."""
    if not settings.msa_cache:
        return False
    databases = manifest_databases(index)
    if databases is None:
        return False
    return all(index.has(cache_key(record.sequence, databases)) for record in records)


# ---------------------------------------------------------------------------------------------------------------
# Job state steps


def start_msa(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    job_id = _job_id(event)
    job = parts.repo.get(job_id)
    _refuse_cancelled(job)
    if job.state is not S.MSA:  # MSA already: a retried invoke
        job = _move(parts, job_id, {S.VALIDATING}, S.MSA,
                    progress=Progress(stage="msa", message="MSA job submitted to the CPU queue"))
    return {"state": job.state.value}


def start_prediction(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    job_id = _job_id(event)
    job = parts.repo.get(job_id)
    _refuse_cancelled(job)
    if job.state is S.VALIDATING:
        # An MSA cache hit skips the MSA job, but the state graph passes through MSA: the phase shows it took ~0 s.
        job = _move(parts, job_id, {S.VALIDATING}, S.MSA,
                    progress=Progress(stage="msa", message="MSA cache hit: no MSA job"))
    if job.state is not S.PREDICTING:
        job = _move(parts, job_id, {S.MSA}, S.PREDICTING,
                    progress=Progress(stage="predict", message="prediction job submitted to the GPU queue"))
    return {"state": job.state.value}


def check_predict_failure(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: failure (the Catch's Error and Cause), queue, next_queue. Output: retry (run again on next_queue),
    out_of_memory, exit_code."""
    job_id = _job_id(event)
    _refuse_cancelled(parts.repo.get(job_id))  # a terminated prediction fails too; that is no reason to retry
    failure = batch_failure(event.get("failure") or {})
    exit_code = failure.exit_code if failure is not None else None
    out_of_memory = exit_code == EXIT_GPU_OUT_OF_MEMORY
    larger = event.get("next_queue")
    retry = out_of_memory and isinstance(larger, str)
    if retry:
        message = f"out of GPU memory on queue {event.get('queue')}; running again on queue {larger}"
        _update(parts.repo, job_id, {S.PREDICTING}, progress=Progress(stage="predict", message=message))
        log.warning(message)
    return {"retry": retry, "out_of_memory": out_of_memory, "exit_code": exit_code}


def mark_succeeded(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    job_id = _job_id(event)
    job = parts.repo.get(job_id)
    _refuse_cancelled(job)
    if job.state is S.SUCCEEDED:
        return {"state": job.state.value}
    summaries = _published_summaries(parts.store, job)
    done = Progress(stage="done", step=len(summaries), total=len(summaries), message=jobrun.best_line(summaries))
    cost, phases = measured_cost(job, event)
    artifacts = {}
    gpu = _gpu_summary(parts.store, job_id)
    if gpu is not None:
        cost["gpu"] = gpu
        artifacts[GPU_SUMMARY] = _gpu_summary_key(job_id)
    job = _move(parts, job_id, {S.PREDICTING}, S.SUCCEEDED, progress=done, cost=cost, artifacts=artifacts)
    for phase, seconds in phases.items():
        _metric(parts, "PhaseSeconds", seconds, Phase=phase)
    if "usd" in cost:
        _metric(parts, "JobCostUSD", cost["usd"]["cpu_usd"], Phase="cpu")
        _metric(parts, "JobCostUSD", cost["usd"]["gpu_usd"], Phase="gpu")
    log.info("SUCCEEDED: %s", done.message)
    return {"state": job.state.value}


def batch_seconds(result: Mapping[str, Any] | None) -> float | None:
    """A Batch job's run time from its description (the batch:submitJob.sync result): StoppedAt - StartedAt, in
    epoch milliseconds. None when either is missing (no such job: an MSA cache hit ran no MSA job)."""
    if not isinstance(result, Mapping):
        return None
    started, stopped = _field(result, "StartedAt"), _field(result, "StoppedAt")
    if not isinstance(started, (int, float)) or not isinstance(stopped, (int, float)) or stopped < started:
        return None
    return round((stopped - started) / 1000.0, 3)


def _queue_ran_on(plan: Mapping[str, Any], predict: Mapping[str, Any] | None) -> str:
    """The GPU queue the prediction finished on: the plan's, or its next larger one after an out-of-memory."""
    ran = _field(predict, "JobQueue") if isinstance(predict, Mapping) else None
    if ran is not None and ran == plan.get("next_queue_arn") and plan.get("next_queue"):
        return str(plan["next_queue"])
    return str(plan["queue"])


def measured_cost(job: Job, event: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The cost entries MarkSucceeded records, and the phase seconds they priced.

    Input: batch.msa and batch.predict (the Batch job descriptions the definition keeps of RunMsa and
    RunPrediction: StartedAt, StoppedAt, JobQueue) and plan (Validate's output: the queues and the GPU count).
    The CPU phase is the MSA job's run time, the GPU phase the prediction job's, priced by af2jobs.cost on the
    queue it ran on (the local worker prices its own measured seconds the same way, as cost["usd"]). Where Batch
    gave no times, the stages' own measurements (msa_s; predict_s + publish_s) stand in. Not counted: a first
    attempt that failed (the MSA's retry, the prediction before an out-of-memory move) and instance start-up."""
    from af2jobs.cost import phase_cost

    batch = event.get("batch") or {}
    plan = event.get("plan") or {}
    measured = job.cost or {}
    msa_s = batch_seconds(batch.get("msa"))
    predict_s = batch_seconds(batch.get("predict"))
    cost: dict[str, Any] = {}
    phases: dict[str, float] = {}
    if msa_s is not None:
        cost["msa_batch_s"] = phases["msa"] = msa_s
    if predict_s is not None:
        cost["predict_batch_s"] = phases["predict"] = predict_s
    if not plan.get("queue"):
        log.warning("no plan in the task input: the job's cost is not priced")
        return cost, phases
    cpu_s = msa_s if msa_s is not None else float(measured.get("msa_s") or 0.0)
    gpu_s = predict_s if predict_s is not None else sum(float(measured.get(k) or 0.0)
                                                         for k in ("predict_s", "publish_s"))
    cost["usd"] = phase_cost(cpu_s, gpu_s, queue=_queue_ran_on(plan, batch.get("predict")),
                             gpus=int(plan.get("gpu") or 1))
    return cost, phases


def _gpu_summary_key(job_id: str) -> str:
    return f"jobs/{job_id}/output/{GPU_SUMMARY}"


def _gpu_summary(store: ArtifactStore, job_id: str) -> dict[str, Any] | None:
    """The GPU agent's summary of the prediction (mean and max utilisation, peak memory), if it wrote one."""
    try:
        data = json.loads(store.get_bytes(_gpu_summary_key(job_id)))
    except errors.NotFoundError:
        return None
    except ValueError:
        log.warning("%s is not JSON; not recorded", GPU_SUMMARY)
        return None
    return data if isinstance(data, dict) else None


def _published_summaries(store: ArtifactStore, job: Job) -> list[dict[str, Any]]:
    key = job.artifacts.get(jobrun.PREDICTIONS)
    try:
        if key is None:
            raise errors.NotFoundError("the job records no predictions.json")
        records = json.loads(store.get_bytes(key))["records"]
    except (errors.NotFoundError, ValueError, KeyError, TypeError) as exc:
        raise OutputsMissing(f"job {job.id}: the published predictions.json is missing or unreadable ({exc})") from None
    return records


def mark_failed(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: failure (the Catch's Error and Cause). The job becomes FAILED with an error naming the stage."""
    job_id = _job_id(event)
    job = parts.repo.get(job_id)
    _refuse_cancelled(job)
    if job.state is S.FAILED:  # a retried invoke
        return {"state": job.state.value, "error": job.error.model_dump() if job.error else None}
    if job.state in TERMINAL:
        raise JobStateConflict(f"job {job_id} is {job.state.value}; it cannot fail any more")
    error = describe_failure(parts.failures, job, event.get("failure") or {})
    progress = Progress(stage="failed", message=f"{error.stage}: {error.type}: {error.message}"[:500])
    job = _move(parts, job_id, {S.QUEUED, S.VALIDATING, S.MSA, S.PREDICTING}, S.FAILED,
                error=error, progress=progress)
    _metric(parts, "JobFailures", 1, Stage=str(error.stage))
    log.error("FAILED in %s: %s: %s", error.stage, error.type, error.message)
    return {"state": job.state.value, "error": error.model_dump()}


ACTIONS: dict[str, Callable[[TaskParts, Mapping[str, Any]], dict[str, Any]]] = {
    "msa": start_msa,
    "predict": start_prediction,
    "check_predict_failure": check_predict_failure,
    "succeeded": mark_succeeded,
    "failed": mark_failed,
}


def job_state(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    action = event.get("action")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return ACTIONS[action](parts, event)


# ---------------------------------------------------------------------------------------------------------------
# Reading failures


@dataclass(frozen=True)
class BatchFailure:
    """A failed Batch job, as a batch:submitJob.sync failure's Cause describes it."""

    batch_job_id: str | None
    job_name: str | None
    queue: str | None
    status_reason: str | None
    exit_code: int | None


def _field(data: Mapping[str, Any], name: str) -> Any:
    # Step Functions hands the job description on with PascalCase names; Batch's own API (and the Batch events)
    # spell them camelCase. Either is read, so the code does not hang on which one a service version uses.
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
    if not isinstance(cause, dict) or _field(cause, "JobId") is None or _field(cause, "Status") is None:
        return None
    container = _field(cause, "Container") or {}
    exit_code = _field(container, "ExitCode")
    if exit_code is None:  # the job's own container block can lack it; its last attempt has it
        attempts = _field(cause, "Attempts") or []
        if attempts:
            exit_code = _field(_field(attempts[-1], "Container") or {}, "ExitCode")
    queue = _field(cause, "JobQueue")
    return BatchFailure(
        batch_job_id=_field(cause, "JobId"),
        job_name=_field(cause, "JobName"),
        queue=queue.rsplit("/", 1)[-1] if isinstance(queue, str) else None,
        status_reason=_field(cause, "StatusReason"),
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
        return JobError(type="GpuOutOfMemory", message=f"the prediction ran out of GPU memory [{where}]",
                        stage=stage)
    message = f"{where} failed: {batch.status_reason or 'no reason given'}, exit code {batch.exit_code}"
    return JobError(type="BatchJobFailed", message=message[:MAX_MESSAGE], stage=stage)


# ---------------------------------------------------------------------------------------------------------------
# Notify


EXPECTED_STATE = {JobEvent.SUCCEEDED: S.SUCCEEDED, JobEvent.FAILED: S.FAILED}


def notify(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: job_id, event ("succeeded" | "failed"). A job no longer in that state (cancelled meanwhile, say) is
    not announced as such."""
    job_id = _job_id(event)
    job_event = JobEvent(event.get("event"))
    job = parts.repo.get(job_id)
    if EXPECTED_STATE.get(job_event) is not job.state:
        log.warning("not notifying %s: the job is %s", job_event.value, job.state.value)
        return {"sent": False, "state": job.state.value}
    parts.notifier.notify(job, job_event)
    return {"sent": True, "state": job.state.value}


# ---------------------------------------------------------------------------------------------------------------
# Batch job state changes (EventBridge)


@dataclass(frozen=True)
class BatchJobChange:
    job_id: str
    stage: str
    batch_job_id: str
    status: str
    queue: str
    reason: str | None
    exit_code: int | None


def batch_job_change(event: Mapping[str, Any]) -> BatchJobChange | None:
    """The af2jobs job and stage of a Batch job state change; None for a Batch job that is not a stage of one.
    The job id is the job's `job_id` parameter (the state machine's submission sets it), else its name
    ("<stage>-<job id>"); the stage is the command's (`python -m af2jobs.batch <stage> ...`), else the name's."""
    detail = event.get("detail") or {}
    name = str(detail.get("jobName") or "")
    stage_from_name, _, id_from_name = name.partition("-")
    job_id = (detail.get("parameters") or {}).get("job_id") or id_from_name
    command = list((detail.get("container") or {}).get("command") or [])
    stage = command[command.index("af2jobs.batch") + 1] if "af2jobs.batch" in command[:-1] else stage_from_name
    if not job_id or stage not in STAGE_STATES or not detail.get("jobId"):
        return None
    exit_code = (detail.get("container") or {}).get("exitCode")
    return BatchJobChange(job_id=job_id, stage=stage, batch_job_id=detail["jobId"], status=str(detail.get("status")),
                          queue=str(detail.get("jobQueue", "")).rsplit("/", 1)[-1],
                          reason=detail.get("statusReason"), exit_code=exit_code)


def batch_event_keys(event: Mapping[str, Any]) -> dict[str, str]:
    change = batch_job_change(event)
    return {"job_id": change.job_id, "batch_job_id": change.batch_job_id} if change else {}


def record_batch_event(repo: JobRepository, event: Mapping[str, Any]) -> dict[str, Any]:
    """Record the Batch job on its job (artifacts["aws:batch:<id>"] = stage, what cancel terminates) and, while the
    job is in that stage, say what happened in its progress."""
    from af2jobs.adapters.aws.stepfunctions import batch_job_artifact

    change = batch_job_change(event)
    if change is None:
        log.info("not a Batch job of an af2jobs stage; ignored")
        return {"recorded": False}
    artifacts = {batch_job_artifact(change.batch_job_id): change.stage}
    message = f"{change.stage} Batch job {change.batch_job_id} {change.status} on queue {change.queue}"
    if change.reason:
        message += f": {change.reason}"
    if change.exit_code is not None:
        message += f" (exit code {change.exit_code})"
    try:
        repo.update(change.job_id, expected_from={STAGE_STATES[change.stage]}, artifacts=artifacts,
                    progress=Progress(stage=change.stage, message=message[:500]))
    except errors.NotFoundError:
        log.warning("job %s no longer exists; %s not recorded", change.job_id, change.batch_job_id)
        return {"recorded": False}
    except errors.ConflictError:
        # The job has moved past this stage (or ended): keep its progress, still record the Batch job.
        repo.update(change.job_id, artifacts=artifacts)
    log.info(message)
    return {"recorded": True, "job_id": change.job_id, "stage": change.stage}
