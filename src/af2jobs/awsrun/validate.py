"""ValidateFunction, the state machine's first task: QUEUED -> VALIDATING, the request and its stored input checked
again with today's limits, and the run planned: the GPU queue for the longest record (and the next larger one for
an out-of-memory retry), the resources for the request's GPU count, whether every record's MSA is cached, and the
owner's fair-share identifier on the Batch queues."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from af2jobs import cost, errors, jobrun, lifecycle
from af2jobs.awsrun.errors import InvalidJob, JobStateConflict
from af2jobs.awsrun.parts import MsaCacheIndex, TaskParts
from af2jobs.fasta import FastaRecord
from af2jobs.models import Job, JobState, Progress
from af2jobs.request import AUTO_QUEUE_LIMITS, JobRequest
from af2jobs.errors import DatabaseError
from af2jobs.pipeline.databases import Database
from af2jobs.pipeline.msa import record_keys
from af2jobs.runconfig import RunConfig
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

S = JobState
# Smallest GPU memory first: the order `que: auto` tries them in, and the order of the out-of-memory retry.
GPU_QUEUES: tuple[str, ...] = tuple(AUTO_QUEUE_LIMITS)
# Per GPU, the predict job definition's defaults (template.yaml: PredictVcpus, PredictMemoryMiB). A request for
# n GPUs gets n times both, as the seed platform sized its jobs.
VCPUS_PER_GPU = cost.GPU_JOB_VCPUS_PER_GPU
MEMORY_MIB_PER_GPU = 30720
# Batch share identifiers are at most 255 letters and digits (SubmitJob, shareIdentifier); owners are any string up
# to 200 characters. A prefix and 128 bits of SHA-256 keep them apart with no table to maintain.
SHARE_PREFIX = "o"
SHARE_HEX_DIGITS = 32


def validate(parts: TaskParts, event: Mapping[str, Any]) -> dict[str, Any]:
    """Input: job_id, and queues (GPU queue name -> ARN, from the definition's substitutions). Output: plan()."""
    job = parts.job(event)
    job_id = job.id
    if job.state is S.QUEUED:
        job = parts.move(job_id, lifecycle.begin_validation, "checking the request and its input")
    elif job.state is not S.VALIDATING:  # VALIDATING: this task is being retried after a lost answer
        raise JobStateConflict(f"job {job_id} is {job.state.value}; Validate starts QUEUED jobs")
    request, records = _revalidate(parts, job)
    try:  # the run the GPU job will make, as jobs and af2 predict resolve it (no JAX here)
        config = jobrun.run_config_for(request, parts.settings, gpu=True)[0]
    except errors.ValidationError as exc:
        raise InvalidJob(exc.message) from None
    run = plan(request, records, event["queues"], msa_cached(parts.msa_cache, records, parts.settings, config))
    run["share_identifier"] = share_identifier(job.owner)
    msa = "cached" if run["msa_cached"] else "searched in the GPU job" if run["msa_on_gpu"] else "to compute"
    message = (f"{len(records)} record(s), longest {run['longest']}; GPU queue {run['queue']}, "
               f"{run['gpu']} GPU(s); MSA {msa}")
    parts.progress(job_id, progress=Progress(stage="validating", message=message), expected={S.VALIDATING})
    log.info("validated: %s", message)
    return run


def _revalidate(parts: TaskParts, job: Job) -> tuple[JobRequest, list[FastaRecord]]:
    """The request through the one schema again, and its stored input parsed with today's limits."""
    try:
        request = JobRequest.parse(job.request.model_dump(mode="json"))
        records = jobrun.read_records(parts.store, job, parts.settings.max_length)
    except (errors.ValidationError, errors.NotFoundError) as exc:
        raise InvalidJob(exc.message) from None
    return request, records


def share_identifier(owner: str) -> str:
    """The owner's fair-share identifier on the Batch queues: the same for every job of the owner, different
    between owners (as far as SHA-256 tells apart), and only letters and digits, as Batch requires."""
    digest = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:SHARE_HEX_DIGITS]
    return f"{SHARE_PREFIX}{digest}"


def next_queue(queue: str) -> str | None:
    """The next larger GPU queue, or None for the largest."""
    index = GPU_QUEUES.index(queue)
    return GPU_QUEUES[index + 1] if index + 1 < len(GPU_QUEUES) else None


def plan(request: JobRequest, records: list[FastaRecord], queue_arns: Mapping[str, str],
         cached: bool) -> dict[str, Any]:
    longest = max(len(r.sequence) for r in records)
    queue = request.queue_for(longest)
    larger = next_queue(queue)
    vcpus, memory = VCPUS_PER_GPU * request.gpu, MEMORY_MIB_PER_GPU * request.gpu
    return {
        "msa_cached": cached,
        # msa_mode mmseqs2: the GPU job searches (MMseqs2 on its GPU, all records in one run) and predicts; no CPU
        # MSA job (docs/architecture.md says why)
        "msa_on_gpu": request.msa_mode in cost.MSA_ON_GPU,
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


def msa_cached(index: MsaCacheIndex, records: list[FastaRecord], settings: Settings, run: RunConfig) -> bool:
    """Whether S3 holds an MSA for every record, keyed as the MSA job would key it today. The manifest describes
    the databases installed when the latest MSA job ran; after a database reload the first job searches and
    refreshes it (and the predict stage recomputes the key from the databases it sees, so a stale manifest costs
    time, never results)."""
    if not settings.msa_cache:
        return False
    databases = manifest_databases(index)
    if databases is None:
        return False
    try:
        keys = [key for record in records
                for key in record_keys(record, databases, run.db_preset, run.msa_mode)]
    except DatabaseError:
        return False  # the MSA job will say what is missing
    return all(index.has(key) for key in keys)


__all__ = ["GPU_QUEUES", "MEMORY_MIB_PER_GPU", "SHARE_HEX_DIGITS", "SHARE_PREFIX", "VCPUS_PER_GPU",
           "manifest_databases", "msa_cached", "next_queue", "plan", "share_identifier", "validate"]
