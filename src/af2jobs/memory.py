"""How much memory one record's prediction needs, estimated before it runs, and how much a machine has for it.
Light: no JAX here (the API, the local worker's admission and `af2 predict` call it before any model is built).

    prediction_bytes(length, run, backend)   the peak of the process that predicts a record of `length` residues
                                             (a complex: its summed length) under RunConfig `run`, on "cpu" (the
                                             process's resident memory) or "gpu" (the device's memory)
    host_bytes()                             this machine's memory (MemTotal)

The estimate is a model of where the memory goes, its coefficients fitted to measured peaks (bench/memory.py,
bench/results/memory/; docs/performance.md, "Memory"):

    process     the runtime itself (Python, XLA, AlphaFold's code; on a GPU the allocator's own share)
    parameters  the models' parameters the process keeps at once (ParamsProvider.KEPT in host memory and as many
                on the device: on a CPU both copies are the process's memory), 4 bytes each
    pair        the pair representation and what the Evoformer block makes of it: a few copies of [L, L, 128],
                the distogram's and the PAE's logits, the template pair stack (`pair` bytes per residue pair)
    msa         the MSA representation of the cluster centres [N, L, 256] and the extra rows [E, L, 64], a few
                copies (`msa` bytes per channel entry)

L is the padded length the model compiles at (RunConfig.length_buckets). The Evoformer's blocks run one after
another through one compiled body (a scan), so 48 blocks need what one needs: the tiny profile's activations are the
full profile's. A CPU's XLA keeps about seven times a GPU's bytes per residue pair (no fused attention). A complex
(AlphaFold-Multimer) keeps about twice a monomer's per pair: measured on a GPU, taken as the same ratio on a CPU
(not measured there). Tests hold the estimate at or above every recorded peak (tests/unit/test_memory_estimate.py)
and a live one (tests/pipeline/test_memory_measured.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from af2jobs.runconfig import RunConfig

GIB = 1 << 30
# Parameters of one model (tests/pipeline/test_memory_measured.py checks them against the models' shapes).
PARAMETERS = {"full": 93_237_338, "tiny": 5_016_538}
# The models whose parameters a process keeps at once: ParamsProvider.KEPT in host memory, predict's
# DEVICE_PARAMS_KEPT on the device (a run's five models; both take this one).
MODELS_KEPT = 5
MSA_CHANNELS, EXTRA_CHANNELS = 256, 64
# What a prediction on the CPU leaves to the rest of the machine: the server, its MSA searches, the OS.
HOST_RESERVE = 2 * GIB


@dataclass(frozen=True)
class Coefficients:
    process: int  # bytes
    pair: float  # bytes per residue pair (L^2)
    msa: float  # bytes per MSA channel entry (rows x L x channels)


# Fitted to the recorded peaks (bench/results/memory/), a few per cent above every one.
COEFFICIENTS = {
    ("cpu", False): Coefficients(process=int(1.2 * GIB), pair=8200.0, msa=24.0),
    ("cpu", True): Coefficients(process=int(1.2 * GIB), pair=16400.0, msa=24.0),
    ("gpu", False): Coefficients(process=int(1.0 * GIB), pair=1100.0, msa=13.0),
    ("gpu", True): Coefficients(process=int(1.0 * GIB), pair=2200.0, msa=2.0),
}


def padded_length(length: int, run: RunConfig) -> int:
    from af2jobs.runconfig import bucket_length

    return bucket_length(length) if run.length_buckets else length


def prediction_bytes(length: int, run: RunConfig, backend: str, *, depth: int | None = None) -> int:
    """The estimated peak memory of predicting one record of `length` residues under `run` on `backend` ("cpu" or
    "gpu"). `depth`: the MSA's rows, when known (the caps are fitted to a shallow MSA); the run's caps otherwise."""
    gpu = backend == "gpu"
    c = COEFFICIENTS[("gpu" if gpu else "cpu", run.multimer)]
    n = padded_length(length, run)
    clusters, extra = run.max_msa_clusters, run.max_extra_msa
    if depth is not None and not run.multimer:
        fitted = run.fitted_to(depth)
        clusters, extra = fitted.max_msa_clusters, fitted.max_extra_msa
    kept = min(MODELS_KEPT, len(run.model_names) * run.seeds)
    params = PARAMETERS[run.profile] * 4 * kept * (1 if gpu else 2)
    return int(c.process + params + c.pair * n * n + c.msa * n * (clusters * MSA_CHANNELS + extra * EXTRA_CHANNELS))


@dataclass(frozen=True)
class Capacity:
    """What one prediction may use where it runs: the backend ("cpu" | "gpu"), the device's kind, and the bytes
    (the GPU's memory as XLA may take it; on a CPU, the machine's less HOST_RESERVE), capped by the operator's
    AF2_PREDICTION_MEMORY_GB."""

    backend: str
    device: str
    bytes: int | None  # None: the device does not say (and no cap is set): nothing is held to it

    @classmethod
    def of(cls, backend: str, device: str, available: int | None, cap_gb: float | None) -> Capacity:
        capped = [n for n in (available, None if cap_gb is None else int(cap_gb * GIB)) if n is not None]
        return cls(backend, device, min(capped) if capped else None)

    def describe(self) -> str:
        where = "this machine's memory" if self.backend != "gpu" else f"the {self.device}'s memory"
        return f"{gib(self.bytes)} ({where})" if self.bytes is not None else f"what {where} allows (unknown)"


def proc_bytes(path: str, field: str) -> int | None:
    """A "<field>: <n> kB" line of a /proc file (/proc/meminfo, /proc/<pid>/status), in bytes; None when the file
    or the line is not there (a process that has ended)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def host_bytes() -> int:
    """This machine's memory (MemTotal), in bytes."""
    total = proc_bytes("/proc/meminfo", "MemTotal")
    if total is None:
        raise RuntimeError("no MemTotal in /proc/meminfo")
    return total


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GB"


__all__ = ["COEFFICIENTS", "GIB", "HOST_RESERVE", "PARAMETERS", "Capacity", "gib", "host_bytes", "padded_length",
           "prediction_bytes", "proc_bytes"]
