"""What one job may ask of this deployment, checked before anything is stored or run, the same way whatever the
door (the API, `af2 predict`):

    check_size(request, records, settings)   records per job and residues per job (AF2_MAX_JOB_RECORDS,
                                             AF2_MAX_JOB_RESIDUES); the refusal carries the job's own estimate, so the
                                             user sees why the limit is there
    check_memory(records, run, backend, ...) each record's prediction against the memory where it would run
                                             (af2jobs.memory's estimate): before the MSA with the smallest MSA the
                                             record could have, once its MSA is made with its depth

A job over a limit is refused as a whole (422, nothing stored): split it into several jobs, or have the operator
raise the limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from af2jobs import errors
from af2jobs.fasta import FastaRecord

if TYPE_CHECKING:
    from af2jobs.memory import Capacity
    from af2jobs.request import JobRequest
    from af2jobs.runconfig import RunConfig
    from af2jobs.settings import Settings


def _days(seconds: float) -> str:
    return f"{seconds / 86400:,.1f} days" if seconds >= 86400 else f"{seconds / 3600:,.1f} hours"


def estimate_note(request: JobRequest, records: list[FastaRecord]) -> str:
    """The job's estimate in words: MSA CPU time, GPU time and dollars (af2jobs.cost)."""
    from af2jobs.cost import estimate_request

    est = estimate_request(request, [len(r.sequence) for r in records])
    return (f"its estimate: {_days(est['msa_s'])} of MSA CPU time, {_days(est['gpu_s'])} of GPU time, "
            f"${est['total_usd']:,.2f}")


def check_size(request: JobRequest, records: list[FastaRecord], settings: Settings) -> None:
    """ValidationError (naming the input's field) when the job has more records or residues than one job may."""
    field = "sequence" if request.sequence is not None else "file_name"
    residues = sum(len(r.sequence) for r in records)
    if len(records) > settings.max_job_records:
        over = (f"the input has {len(records):,} records; a job takes at most {settings.max_job_records:,} "
                "(AF2_MAX_JOB_RECORDS)")
    elif residues > settings.max_job_residues:
        over = (f"the input has {residues:,} residues; a job takes at most {settings.max_job_residues:,} "
                "(AF2_MAX_JOB_RESIDUES)")
    else:
        return
    raise errors.ValidationError(f"{over}: split it into several jobs, or ask the operator to raise the limit "
                                 f"({estimate_note(request, records)})", field=field)


def check_memory(records: list[FastaRecord], run: RunConfig, capacity: Capacity, *,
                 depths: dict[str, int] | None = None) -> None:
    """MemoryLimitError naming the first record whose prediction needs more than `capacity`. `depths`: each
    record's MSA rows (by slug) once known; before, one row (the least it could need)."""
    from af2jobs import memory

    if capacity.bytes is None:  # a device that does not say its memory, and no AF2_PREDICTION_MEMORY_GB
        return
    for record in records:
        depth = (depths or {}).get(record.slug, 1)
        need = memory.prediction_bytes(len(record.sequence), run, capacity.backend, depth=depth)
        if need > capacity.bytes:
            more = " or AF2_UNIFIED_MEMORY=true (slower, in host memory)" if capacity.backend == "gpu" else ""
            raise errors.MemoryLimitError(
                f"record {record.name} ({len(record.sequence):,} residues) needs about {memory.gib(need)} to be "
                f"predicted on this {capacity.backend} (af2jobs' estimate); a prediction here may use "
                f"{capacity.describe()}: split it, or run it where there is more memory{more}", field="sequence",
                stage="validating" if depths is None else "predict")


__all__ = ["check_memory", "check_size", "estimate_note"]
