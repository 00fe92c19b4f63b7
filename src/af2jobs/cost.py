"""What a job costs in US dollars: measured (after the run) and estimated (before submission).

Prices are data, below, with their source and date. They are AWS on-demand list prices for Linux in us-east-1
as of PRICES_AS_OF, copied by hand from https://aws.amazon.com/ec2/pricing/on-demand/ ; AWS changes them (p5 fell
by about 45 % in June 2025): check them before quoting a cost. On PRICES_CHECKED they were compared with stored
public pages (not the live AWS page, which could not be reached): PRICE_CHECKS names, per instance type, the page
that shows the same price; every other price is unconfirmed (see the comments in PRICES). Spot, savings plans,
storage, data transfer, Lambda, Step Functions and the minutes an instance spends starting or idle are not counted.

Cost model (the share of an instance a job holds, for as long as it runs):
    CPU phase  (validating + MSA + features)  msa_vcpus / instance vCPUs x instance price x seconds
    GPU phase  (predict + publish)            gpu / instance GPUs      x instance price x seconds
job_cost prices a finished job for every runner: the stages' own measured seconds, or where the runner measured a
phase from outside (on AWS, the Batch jobs' run times) those; a record's report.html prices that record's own
stages (record_cost).
The queue names the GPU instance (QUEUE_INSTANCES, the template's default families at the size a 1-GPU job
packs onto); the MSA job runs on MSA_INSTANCE (MsaVcpus 8 of an m6i.2xlarge, as template.yaml sizes it).
A local run is priced as if it had run on those instances: "what this would have cost on AWS".

Estimate before submission (estimate()): GPU seconds from the sequence length, a quadratic fitted by least
squares to the `best` column of docs/performance.md's GPU table (one H200, 126-1,396 aa, 3 recycles, 5 models):
    best_gpu_s(L) = 12.28 + 8.249e-3 L + 1.383e-5 L^2        (within 10.4 % of every measured row)
    full_run_s(L) = 0.214 + 1.475e-3 L + 5.816e-6 L^2        (the winning model's 3-recycle run)
Strategy `all` and `stop-at-score` run up to every model in full: best_gpu_s + (models - 1) x full_run_s, an
upper bound. Other GPUs are slower than the H200 the table was measured on: each GPU instance carries an
ASSUMED relative speed (not measured here) that divides the seconds.
The MSA phase (msa_seconds) is MEASURED on synthetic data and EXTRAPOLATED: bench/msa.py measures each search
tool's seconds per query (in a batch) on a synthetic database, per million database units (residues of a sequence
database; clusters of an HH-suite database) at MSA_RATES_CPUS cores (MSA_RATES); the estimate multiplies those by
the real databases' sizes (REAL_DATABASES) that msa_mode and db_preset search (MSA_SEARCHES), and ASSUMES time
linear in the database's size, in the query's length (relative to the benchmark's queries) and in cores (from
MSA_RATES_CPUS to MSA_VCPUS). The estimate's msa_basis says so, and which figures are placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRICES_AS_OF = "2025-06"
PRICES_CHECKED = "2026-11-22"
PRICES_SOURCE = (
    "AWS EC2 on-demand list prices, Linux, us-east-1, https://aws.amazon.com/ec2/pricing/on-demand/ "
    f"(as of {PRICES_AS_OF}; on {PRICES_CHECKED} g5.xlarge and p4d.24xlarge matched stored public pages, the "
    "others are unconfirmed; not verified against the live page: check before relying on them)"
)
REGION = "us-east-1"
# Instance type -> the stored public page that shows the same us-east-1 on-demand price (PRICES_CHECKED).
PRICE_CHECKS: dict[str, str] = {
    "g5.xlarge": "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/ "
                 "($1.006/hr, us-east-1, June 2026)",
    "p4d.24xlarge": "https://www.usage.ai/blogs/finops/ai-ml-cost/gpu-instance-cost-optimization/ "
                    "(~$32.77/hr on-demand, page updated 2026-06-24)",
}


@dataclass(frozen=True)
class Instance:
    usd_per_hour: float
    vcpus: int
    gpus: int = 0
    # GPU speed relative to the H200 of docs/performance.md (1.0); an assumption, not a measurement.
    relative_speed: float = 1.0


# Data: on-demand USD/hour, us-east-1, as of PRICES_AS_OF (see PRICES_SOURCE).
PRICES: dict[str, Instance] = {
    # g5: NVIDIA A10G 24 GB (queue "low"). g5.xlarge confirmed (PRICE_CHECKS); the other sizes unconfirmed.
    "g5.xlarge": Instance(1.006, 4, 1, 0.25),
    "g5.2xlarge": Instance(1.212, 8, 1, 0.25),
    "g5.4xlarge": Instance(1.624, 16, 1, 0.25),
    "g5.8xlarge": Instance(2.448, 32, 1, 0.25),
    "g5.12xlarge": Instance(5.672, 48, 4, 0.25),
    "g5.16xlarge": Instance(4.096, 64, 1, 0.25),
    "g5.24xlarge": Instance(8.144, 96, 4, 0.25),
    "g5.48xlarge": Instance(16.288, 192, 8, 0.25),
    # g6e: NVIDIA L40S 48 GB (queue "mid"). Unconfirmed: no stored page gives a g6e on-demand price.
    "g6e.xlarge": Instance(1.861, 4, 1, 0.45),
    "g6e.2xlarge": Instance(2.242, 8, 1, 0.45),
    "g6e.4xlarge": Instance(3.004, 16, 1, 0.45),
    "g6e.8xlarge": Instance(4.529, 32, 1, 0.45),
    "g6e.12xlarge": Instance(10.493, 48, 4, 0.45),
    "g6e.16xlarge": Instance(7.577, 64, 1, 0.45),
    "g6e.24xlarge": Instance(15.066, 96, 4, 0.45),
    "g6e.48xlarge": Instance(30.131, 192, 8, 0.45),
    # p4d: 8 x NVIDIA A100 40 GB (queue "high"). Confirmed at ~$32.77 (PRICE_CHECKS); one stored page says the
    # June 2025 reduction also touched P4 instances without giving the new price: check it.
    "p4d.24xlarge": Instance(32.773, 96, 8, 0.5),
    # p5: 8 x NVIDIA H100 80 GB (queue "p4"); price after AWS's June 2025 reduction. UNCONFIRMED: the stored
    # pages disagree ($98.32 before the reduction; ~44-45 % lower after it; $80.62 on one page): check it.
    "p5.48xlarge": Instance(55.04, 192, 8, 0.85),
    # MSA (CPU) queue. Unconfirmed (AWS's Auto Scaling guide lists c5.2xlarge at $0.34 as an example price, the
    # value given here for c6i.2xlarge, but says it is not current pricing).
    "c6i.xlarge": Instance(0.17, 4),
    "c6i.2xlarge": Instance(0.34, 8),
    "c6i.4xlarge": Instance(0.68, 16),
    "c6i.8xlarge": Instance(1.36, 32),
    "m6i.xlarge": Instance(0.192, 4),
    "m6i.2xlarge": Instance(0.384, 8),
    "m6i.4xlarge": Instance(0.768, 16),
    "m6i.8xlarge": Instance(1.536, 32),
}

# The instance each GPU queue's job is priced on (template.yaml's default family for that queue).
QUEUE_INSTANCES: dict[str, str] = {
    "low": "g5.2xlarge",
    "mid": "g6e.2xlarge",
    "high": "p4d.24xlarge",
    "p4": "p5.48xlarge",
}
MSA_INSTANCE = "m6i.2xlarge"
MSA_VCPUS = 8  # template.yaml MsaVcpus
GPU_JOB_VCPUS_PER_GPU = 8  # the predict job definition's vCPUs per GPU (template.yaml PredictVcpus)
# msa_mode mmseqs2 on AWS searches in the GPU job (awsrun.validate.plan: no CPU MSA job): its MSA phase is priced on
# the GPU instance, at the MMseqs2 rate measured on CPUs (no GPU rate is measured yet: an upper bound).
MSA_ON_GPU = ("mmseqs2",)

# The GPU table's fit (see the module docstring); coefficients of 1, L, L^2.
BEST_GPU_S = (12.28, 8.249e-3, 1.383e-5)
FULL_RUN_S = (0.214, 1.475e-3, 5.816e-6)

@dataclass(frozen=True)
class SearchRate:
    """Seconds per query (in a batch) per million database units, as bench/msa.py measured them."""
    seconds_per_million: float
    unit: str  # "residues" (a sequence database) or "clusters" (an HH-suite database's entries)


# The one table of MSA figures. jackhmmer and MMseqs2: MEASURED by bench/msa.py (bench/msa_device.sh) on 16 cores of
# the GPU machine, one run: a synthetic database of 1,000,000 sequences (279.6 M residues, real background), 100
# queries in one call: jackhmmer (pyhmmer, AlphaFold's options) 2.144 s and MMseqs2 (msa_mode mmseqs2's settings)
# 0.307 s per query (docs/performance.md, "MSA on 16 cores"); per million residues they are that run's
# msa_bench.json "EXTRAPOLATED" -> "16" -> "per_query_s_per_million". (At 400,000 sequences they were 0.657 s and
# 0.216 s: jackhmmer grew faster than the database, MMseqs2 slower; the estimate stays linear from the largest run.)
# HHblits: an ASSUMPTION, not a measurement. The HH-suite databases one benchmark run can build hold 67-2,079
# clusters, where a query's time is mostly its start-up (0.24 s at 1,671 clusters on 16 cores), so no rate per
# cluster follows from them. The rate is set so that jackhmmer's measured part plus HHblits of BFD and UniRef30 on
# the MSA job's 8 vCPUs make the 35 minutes of MSA that the original platform's 126 aa job spent of its 39 (its
# published table: one A100, 126 aa, 39 min end to end; the GPU's part of it about 4 min). Replace it when HHblits
# is measured at scale.
MSA_RATES_SOURCE = ("bench/msa.py on 16 cores, synthetic database of 1,000,000 sequences (jackhmmer, MMseqs2: "
                    "measured); HHblits: ASSUMED, calibrated to the original platform's 126 aa job")
MSA_RATES_CPUS = 16
MSA_RATES_QUERY_LENGTH = 280  # mean length of the benchmark's queries (seed proteins of 100-500 aa)
MSA_RATES: dict[str, SearchRate] = {
    "jackhmmer": SearchRate(2.144 / 279.6, "residues"),
    "mmseqs2": SearchRate(0.307 / 279.6, "residues"),
    "hhblits": SearchRate(13.3, "clusters"),
}
# The real databases' sizes in the unit their tool's rate is per (approximate; from each release's own figures):
# UniRef90 2022_01 ~144 M sequences x ~270 aa; MGnify 2022_05 ~623 M sequences x ~160 aa; BFD 65,983,866 clusters
# of 2.2 G sequences; UniRef30 2021_03 about 29 M clusters; small BFD (reduced_dbs) ~65.9 M sequences x ~250 aa.
REAL_DATABASES: dict[str, tuple[float, str]] = {
    "uniref90": (3.9e10, "residues"), "mgnify": (1.0e11, "residues"), "small_bfd": (1.65e10, "residues"),
    "bfd": (6.6e7, "clusters"), "uniref30": (2.9e7, "clusters"),
}
# (msa_mode, db_preset) -> (tool, database) searched. msa_mode mmseqs2 searches MMseqs2 databases built from the
# UniRef90 and MGnify FASTA files (docs/operations.md), whatever db_preset says.
MSA_SEARCHES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("jackhmmer", "full_dbs"): (("jackhmmer", "uniref90"), ("jackhmmer", "mgnify"), ("hhblits", "bfd"),
                                ("hhblits", "uniref30")),
    ("jackhmmer", "reduced_dbs"): (("jackhmmer", "uniref90"), ("jackhmmer", "mgnify"), ("jackhmmer", "small_bfd")),
    ("mmseqs2", "full_dbs"): (("mmseqs2", "uniref90"), ("mmseqs2", "mgnify")),
    ("mmseqs2", "reduced_dbs"): (("mmseqs2", "uniref90"), ("mmseqs2", "mgnify")),
}
MSA_BASIS = (f"MSA seconds: per-query search seconds measured on a synthetic database ({MSA_RATES_SOURCE}), "
             f"EXTRAPOLATED to the real databases' sizes, assumed linear in database size and query length and "
             f"scaled from {MSA_RATES_CPUS} to {MSA_VCPUS} cores")


def msa_seconds(length: int, *, msa_mode: str = "jackhmmer", db_preset: str = "full_dbs",
                vcpus: int = MSA_VCPUS) -> dict[str, float]:
    """Estimated search seconds of one query of `length` residues, per (tool, database) that msa_mode and
    db_preset search, from MSA_RATES (see the module docstring: measured on synthetic data, extrapolated)."""
    try:
        searches = MSA_SEARCHES[(msa_mode, db_preset)]
    except KeyError:
        raise KeyError(f"no MSA estimate for msa_mode {msa_mode!r} with db_preset {db_preset!r}") from None
    scale = (length / MSA_RATES_QUERY_LENGTH) * (MSA_RATES_CPUS / vcpus)
    parts = {}
    for tool, database in searches:
        rate, (size, unit) = MSA_RATES[tool], REAL_DATABASES[database]
        if rate.unit != unit:
            raise ValueError(f"{tool}'s rate is per million {rate.unit}, {database}'s size is in {unit}")
        parts[f"{tool}:{database}"] = rate.seconds_per_million * size / 1e6 * scale
    return parts


# Measured cost keys (seconds) the local worker and the Batch tasks record, by phase.
CPU_KEYS = ("validating_s", "msa_s")
GPU_KEYS = ("predict_s", "publish_s")


def _poly(coef: tuple[float, float, float], length: int) -> float:
    return coef[0] + coef[1] * length + coef[2] * length * length


def instance(name: str) -> Instance:
    try:
        return PRICES[name]
    except KeyError:
        raise KeyError(f"no price for instance type {name!r}; known: {', '.join(sorted(PRICES))}") from None


def gpu_instance_for(queue: str) -> str:
    """The instance a GPU queue is priced on ("auto" must be resolved to a queue first)."""
    if queue not in QUEUE_INSTANCES:
        raise KeyError(f"no GPU instance for queue {queue!r}; known: {', '.join(QUEUE_INSTANCES)}")
    return QUEUE_INSTANCES[queue]


def cpu_usd(seconds: float, *, instance_type: str = MSA_INSTANCE, vcpus: int = MSA_VCPUS) -> float:
    inst = instance(instance_type)
    share = min(1.0, vcpus / inst.vcpus)
    return share * inst.usd_per_hour * seconds / 3600.0


def gpu_usd(seconds: float, *, instance_type: str, gpus: int = 1) -> float:
    inst = instance(instance_type)
    if inst.gpus < 1:
        raise ValueError(f"{instance_type} has no GPU")
    share = min(1.0, gpus / inst.gpus)
    return share * inst.usd_per_hour * seconds / 3600.0


def _meta() -> dict[str, Any]:
    return {"currency": "USD", "prices_as_of": PRICES_AS_OF, "prices_source": PRICES_SOURCE, "region": REGION}


def job_cost(measured: Mapping[str, Any], *, queue: str, gpus: int = 1, cpu_s: float | None = None,
             gpu_s: float | None = None) -> dict[str, Any]:
    """Dollars of a finished job, the one pricing of every runner: its CPU phase and GPU phase priced on the
    queue's instances. A phase's seconds are cpu_s / gpu_s where the runner measured the phase from outside (on
    AWS, the Batch jobs' run times), else the stages' own measurements in `measured` (CPU_KEYS, GPU_KEYS: the job
    record's cost entries)."""
    if cpu_s is None:
        cpu_s = sum(float(measured.get(k) or 0.0) for k in CPU_KEYS)
    if gpu_s is None:
        gpu_s = sum(float(measured.get(k) or 0.0) for k in GPU_KEYS)
    gpu_type = gpu_instance_for(queue)
    cpu = cpu_usd(cpu_s)
    gpu = gpu_usd(gpu_s, instance_type=gpu_type, gpus=gpus)
    return {
        "cpu_usd": round(cpu, 6), "gpu_usd": round(gpu, 6), "total_usd": round(cpu + gpu, 6),
        "cpu_instance": MSA_INSTANCE, "gpu_instance": gpu_type, "gpus": gpus,
        "cpu_s": round(cpu_s, 3), "gpu_s": round(gpu_s, 3), **_meta(),
    }


def estimate(length: int, *, queue: str, gpus: int = 1, strategy: str = "best", models: int = 5,
             msa_mode: str = "jackhmmer", db_preset: str = "full_dbs") -> dict[str, Any]:
    """Estimated seconds and dollars of one record of `length` residues before it runs (see the docstring)."""
    if length < 1:
        raise ValueError("length must be positive")
    gpu_type = gpu_instance_for(queue)
    h200_s = _poly(BEST_GPU_S, length)
    if strategy != "best":
        h200_s += max(0, models - 1) * _poly(FULL_RUN_S, length)
    gpu_s = h200_s / instance(gpu_type).relative_speed
    on_gpu = msa_mode in MSA_ON_GPU
    msa_parts = msa_seconds(length, msa_mode=msa_mode, db_preset=db_preset,
                            vcpus=GPU_JOB_VCPUS_PER_GPU * gpus if on_gpu else MSA_VCPUS)
    msa_s = sum(msa_parts.values())
    msa_usd = gpu_usd(msa_s, instance_type=gpu_type, gpus=gpus) if on_gpu else cpu_usd(msa_s)
    cpu = 0.0 if on_gpu else msa_usd
    gpu = gpu_usd(gpu_s, instance_type=gpu_type, gpus=gpus) + (msa_usd if on_gpu else 0.0)
    where = (f"; msa_mode {msa_mode} searches in the GPU job: its MSA seconds are priced on {gpu_type}, at MMseqs2's "
             "rate measured on CPUs (its GPU rate is not measured: an upper bound)") if on_gpu else ""
    return {
        "length": length, "queue": queue, "strategy": strategy, "msa_mode": msa_mode, "db_preset": db_preset,
        "msa_s": round(msa_s, 1), "msa_search_s": {k: round(v, 1) for k, v in msa_parts.items()},
        "gpu_s": round(gpu_s, 1),
        "cpu_usd": round(cpu, 4), "gpu_usd": round(gpu, 4), "total_usd": round(cpu + gpu, 4),
        "msa_usd": round(msa_usd, 4), "msa_instance": gpu_type if on_gpu else MSA_INSTANCE,
        "cpu_instance": MSA_INSTANCE, "gpu_instance": gpu_type, "gpus": gpus,
        "basis": ("GPU seconds: fit to docs/performance.md (H200, strategy best) divided by an assumed relative "
                  f"GPU speed; {MSA_BASIS}{where}"),
        **_meta(),
    }


def auto_queue(length: int) -> str:
    """The queue `que: auto` picks for a longest record of `length` residues (models.AUTO_QUEUE_LIMITS)."""
    from af2jobs.request import AUTO_QUEUE_LIMITS

    return next(q for q, limit in AUTO_QUEUE_LIMITS.items() if limit is None or length <= limit)


def _stage_seconds(timings: Mapping[str, Any], stages: tuple[str, ...]) -> float | None:
    """The seconds timings.json holds for these stages (None when it holds none of them)."""
    found = None
    for stage in stages:
        value = timings.get(stage)
        if isinstance(value, Mapping):
            # The MSA's search_s is 0 on a cache hit, where its "seconds" are the original search's.
            value = value.get("search_s", value.get("seconds"))
        if isinstance(value, (int, float)):
            found = (found or 0.0) + float(value)
    return found


def record_cost(timings: Mapping[str, Any], *, length: int, queue: str, gpus: int = 1, strategy: str = "best",
                models: int = 5, msa_mode: str = "jackhmmer", db_preset: str = "full_dbs") -> dict[str, Any]:
    """One record's cost for its report: each phase's seconds as its stages measured them (timings.json: msa +
    features on the CPU, predict + outputs on the GPU) priced on the queue's instances; a phase with no
    measurement is estimate()'s, and says so (measured False)."""
    est = estimate(length, queue=queue, gpus=gpus, strategy=strategy, models=models, msa_mode=msa_mode,
                   db_preset=db_preset)
    cpu_s = _stage_seconds(timings, ("msa", "features"))
    gpu_s = _stage_seconds(timings, ("predict", "outputs"))
    gpu_type = gpu_instance_for(queue)
    on_gpu = msa_mode in MSA_ON_GPU  # the MSA phase runs on the GPU job's instance (priced as on AWS)
    msa_usd = (lambda s: gpu_usd(s, instance_type=gpu_type, gpus=gpus)) if on_gpu else cpu_usd
    phases = {
        "cpu": {"measured": cpu_s is not None, "instance": est["msa_instance"],
                "seconds": round(cpu_s if cpu_s is not None else est["msa_s"], 3),
                "usd": round(msa_usd(cpu_s) if cpu_s is not None else est["msa_usd"], 6)},
        "gpu": {"measured": gpu_s is not None, "instance": gpu_type, "gpus": gpus,
                "seconds": round(gpu_s if gpu_s is not None else est["gpu_s"], 3),
                "usd": round(gpu_usd(gpu_s, instance_type=gpu_type, gpus=gpus) if gpu_s is not None
                             else est["gpu_usd"] - (est["msa_usd"] if on_gpu else 0.0), 6)},
    }
    return {"phases": phases, "total_usd": round(sum(p["usd"] for p in phases.values()), 6), "queue": queue,
            "estimate_basis": est["basis"], **_meta()}


def estimate_request(request: Any, lengths: list[int]) -> dict[str, Any]:
    """The estimate of a JobRequest whose records have these lengths (each record its own monomer, or a complex of
    the summed length, whose every model makes predictions_per_model predictions)."""
    queue = request.queue_for(max(lengths))
    models = len(request.model_names) * request.predictions_per_model
    parts = [estimate(n, queue=queue, gpus=request.gpu, strategy=request.strategy, models=models,
                      msa_mode=request.msa_mode, db_preset=request.db_preset) for n in lengths]
    total = {k: round(sum(p[k] for p in parts), 4) for k in ("msa_s", "gpu_s", "cpu_usd", "gpu_usd", "total_usd")}
    return {**parts[0], **total, "length": max(lengths), "records": len(lengths)}


__all__ = ["PRICES", "PRICES_AS_OF", "PRICES_CHECKED", "PRICES_SOURCE", "PRICE_CHECKS", "QUEUE_INSTANCES",
           "MSA_RATES", "REAL_DATABASES", "auto_queue", "estimate", "msa_seconds", "estimate_request", "job_cost",
           "record_cost", "cpu_usd", "gpu_usd"]
