"""JobStateFunction: the job record's move at each step of the state machine after Validate, by event["action"]:

    "msa"                     VALIDATING -> MSA, before RunMsa
    "predict"                 MSA -> PREDICTING (VALIDATING -> MSA -> PREDICTING on an MSA cache hit)
    "check_predict_failure"   is a failed prediction a GPU out-of-memory that a larger queue may fix?
    "succeeded"               PREDICTING -> SUCCEEDED, once the published predictions.json is there; the job's cost
                              (af2jobs.cost.job_cost on the Batch jobs' run times) and the GPU agent's summary
    "failed"                  -> FAILED with the error and the stage it happened in (af2jobs.awsrun.failures)

Each move, and each succeeded job's phase seconds and dollars, is also a metric (TaskParts.metric;
af2jobs.adapters.aws.cloudwatch.METRICS says which), for the dashboard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from af2jobs import cost, errors, layout, lifecycle
from af2jobs.awsrun.contract import EXIT_GPU_OUT_OF_MEMORY
from af2jobs.awsrun.errors import JobStateConflict, OutputsMissing
from af2jobs.awsrun.failures import batch_failure, batch_field, describe_failure
from af2jobs.awsrun.parts import TaskParts
from af2jobs.models import TERMINAL, Job, JobState, Progress
from af2jobs.ports import ArtifactStore

log = logging.getLogger(__name__)

S = JobState


def start_msa(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    job = parts.job(event)
    job_id = job.id
    if job.state is not S.MSA:  # MSA already: a retried invoke
        job = parts.move(job_id, lifecycle.begin_msa, "MSA job submitted to the CPU queue")
    return {"state": job.state.value}


def start_prediction(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    job = parts.job(event)
    job_id = job.id
    if job.state is S.VALIDATING:
        # An MSA cache hit skips the MSA job, but the state graph passes through MSA: the phase shows it took ~0 s.
        job = parts.move(job_id, lifecycle.begin_msa, "MSA cache hit: no MSA job")
    if job.state is not S.PREDICTING:
        job = parts.move(job_id, lifecycle.begin_predict, "prediction job submitted to the GPU queue")
    return {"state": job.state.value}


def check_predict_failure(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: failure (the Catch's Error and Cause), queue, next_queue. Output: retry (run again on next_queue),
    out_of_memory, exit_code."""
    job_id = parts.job(event).id  # a terminated prediction fails too; that is no reason to retry
    failure = batch_failure(event.get("failure") or {})
    exit_code = failure.exit_code if failure is not None else None
    out_of_memory = exit_code == EXIT_GPU_OUT_OF_MEMORY
    larger = event.get("next_queue")
    retry = out_of_memory and isinstance(larger, str)
    if retry:
        message = f"out of GPU memory on queue {event.get('queue')}; running again on queue {larger}"
        parts.progress(job_id, progress=Progress(stage="predict", message=message), expected={S.PREDICTING})
        log.warning(message)
    return {"retry": retry, "out_of_memory": out_of_memory, "exit_code": exit_code}


def mark_succeeded(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    job = parts.job(event)
    job_id = job.id
    if job.state is S.SUCCEEDED:
        return {"state": job.state.value}
    summaries = _published_summaries(parts.store, job)
    priced, phases = measured_cost(job, event)
    artifacts = {}
    gpu = _gpu_summary(parts.store, job_id)
    if gpu is not None:
        priced["gpu"] = gpu
        artifacts[layout.GPU_SUMMARY] = layout.gpu_summary_key(job_id)
    job = parts.move(job_id, lifecycle.succeed, summaries, cost=priced, artifacts=artifacts)
    for phase, seconds in phases.items():
        parts.metric("PhaseSeconds", seconds, Phase=phase)
    if "usd" in priced:
        parts.metric("JobCostUSD", priced["usd"]["cpu_usd"], Phase="cpu")
        parts.metric("JobCostUSD", priced["usd"]["gpu_usd"], Phase="gpu")
    log.info("SUCCEEDED: %s", job.progress.message)
    return {"state": job.state.value}


def batch_seconds(result: Mapping[str, Any] | None) -> float | None:
    """A Batch job's run time from its description (the batch:submitJob.sync result): StoppedAt - StartedAt, in
    epoch milliseconds. None when either is missing (no such job: an MSA cache hit ran no MSA job)."""
    if not isinstance(result, Mapping):
        return None
    started, stopped = batch_field(result, "StartedAt"), batch_field(result, "StoppedAt")
    if not isinstance(started, (int, float)) or not isinstance(stopped, (int, float)) or stopped < started:
        return None
    return round((stopped - started) / 1000.0, 3)


def _queue_ran_on(plan: Mapping[str, Any], predict: Mapping[str, Any] | None) -> str:
    """The GPU queue the prediction finished on: the plan's, or its next larger one after an out-of-memory."""
    ran = batch_field(predict, "JobQueue") if isinstance(predict, Mapping) else None
    if ran is not None and ran == plan.get("next_queue_arn") and plan.get("next_queue"):
        return str(plan["next_queue"])
    return str(plan["queue"])


def measured_cost(job: Job, event: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The cost entries MarkSucceeded records, and the phase seconds they priced.

    Input: batch.msa and batch.predict (the Batch job descriptions the definition keeps of RunMsa and
    RunPrediction: StartedAt, StoppedAt, JobQueue) and plan (Validate's output: the queues and the GPU count).
    The CPU phase is the MSA job's run time, the GPU phase the prediction job's, priced by cost.job_cost on the
    queue it ran on; where Batch gave no times, the stages' own measurements on the record stand in. Not counted:
    a first attempt that failed (the MSA's retry, the prediction before an out-of-memory move), instance start-up."""
    batch = event.get("batch") or {}
    plan = event.get("plan") or {}
    msa_s = batch_seconds(batch.get("msa"))
    predict_s = batch_seconds(batch.get("predict"))
    entries: dict[str, Any] = {}
    phases: dict[str, float] = {}
    if msa_s is not None:
        entries["msa_batch_s"] = phases["msa"] = msa_s
    if predict_s is not None:
        entries["predict_batch_s"] = phases["predict"] = predict_s
    if not plan.get("queue"):
        log.warning("no plan in the task input: the job's cost is not priced")
        return entries, phases
    entries["usd"] = cost.job_cost(job.cost or {}, cpu_s=msa_s, gpu_s=predict_s,
                                   queue=_queue_ran_on(plan, batch.get("predict")), gpus=int(plan.get("gpu") or 1))
    return entries, phases


def _gpu_summary(store: ArtifactStore, job_id: str) -> dict[str, Any] | None:
    """The GPU agent's summary of the prediction (mean and max utilisation, peak memory), if it wrote one."""
    try:
        data = json.loads(store.get_bytes(layout.gpu_summary_key(job_id)))
    except errors.NotFoundError:
        return None
    except ValueError:
        log.warning("%s is not JSON; not recorded", layout.GPU_SUMMARY)
        return None
    return data if isinstance(data, dict) else None


def _published_summaries(store: ArtifactStore, job: Job) -> list[dict[str, Any]]:
    key = job.artifacts.get(layout.PREDICTIONS)
    try:
        if key is None:
            raise errors.NotFoundError("the job records no predictions.json")
        records = json.loads(store.get_bytes(key))["records"]
    except (errors.NotFoundError, ValueError, KeyError, TypeError) as exc:
        raise OutputsMissing(f"job {job.id}: the published predictions.json is missing or unreadable ({exc})") from None
    return records


def mark_failed(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: failure (the Catch's Error and Cause). The job becomes FAILED with an error naming the stage."""
    job = parts.job(event)
    job_id = job.id
    if job.state is S.FAILED:  # a retried invoke
        return {"state": job.state.value, "error": job.error.model_dump() if job.error else None}
    if job.state in TERMINAL:
        raise JobStateConflict(f"job {job_id} is {job.state.value}; it cannot fail any more")
    error = describe_failure(parts.failures, job, event.get("failure") or {})
    job = parts.move(job_id, lifecycle.fail, error)
    parts.metric("JobFailures", 1, Stage=str(error.stage))
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


__all__ = ["ACTIONS", "batch_seconds", "check_predict_failure", "job_state", "mark_failed", "mark_succeeded",
           "measured_cost", "start_msa", "start_prediction"]
