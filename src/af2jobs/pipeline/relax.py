"""Amber relaxation of the predicted structures: AlphaFold's own relax module (alphafold.relax, OpenMM with the
Amber99sb force field) with AlphaFold 2.3's settings, on OpenMM's CUDA platform where there is one, else its CPU
platform.

    relax_prediction(prediction, which, ...)   models_to_relax: best (AlphaFold's default: the top-ranked model)
                                               | all | none -> {model: Relaxed}

A relaxation that fails (OpenMM cannot minimise the structure, a residue is ill-defined) leaves the unrelaxed
structure as the result; its Relaxed says why (error), and the outputs say the structure is unrelaxed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import jax

from af2jobs.pipeline.predict import ModelRun, Prediction

log = logging.getLogger(__name__)

# run_alphafold.py's RELAX_* constants (AlphaFold 2.3).
MAX_ITERATIONS = 0
ENERGY_TOLERANCE = 2.39
STIFFNESS = 10.0
EXCLUDE_RESIDUES: list[int] = []
MAX_OUTER_ITERATIONS = 3


@dataclass
class Relaxed:
    model: str
    seconds: float
    platform: str  # OpenMM's: CUDA or CPU
    violations_before: int  # residues with structural violations (clashes, bond lengths and angles)
    violations_after: int | None = None
    energy_before: float | None = None  # kJ/mol, as OpenMM reports
    energy_after: float | None = None
    rmsd: float | None = None  # Angstrom moved
    pdb: str | None = None  # the relaxed structure; None when relaxation failed
    error: str | None = None  # why it failed

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "pdb"}
        for key in ("seconds", "energy_before", "energy_after", "rmsd"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 3)
        return out


def cuda_available() -> bool:
    import openmm

    return any(openmm.Platform.getPlatform(i).getName() == "CUDA" for i in range(openmm.Platform.getNumPlatforms()))


def chosen(prediction: Prediction, which: str) -> list[ModelRun]:
    """The runs to relax: the top-ranked one (best), every ranked one (all), none."""
    return {"best": prediction.ranked[:1], "all": list(prediction.ranked), "none": []}[which]


def _violations(prot) -> int:
    from alphafold.relax import amber_minimize

    with jax.default_device(jax.devices("cpu")[0]):  # as AlphaFold computes them: on the host
        return int(amber_minimize.get_violation_metrics(prot)["num_residue_violations"])


def relax_one(model: str, prot, use_gpu: bool) -> Relaxed:
    """Relax one unrelaxed Protein (alphafold.common.protein)."""
    from alphafold.relax import relax

    relaxer = relax.AmberRelaxation(
        max_iterations=MAX_ITERATIONS, tolerance=ENERGY_TOLERANCE, stiffness=STIFFNESS,
        exclude_residues=EXCLUDE_RESIDUES, max_outer_iterations=MAX_OUTER_ITERATIONS, use_gpu=use_gpu)
    t0 = time.perf_counter()
    platform = "CUDA" if use_gpu else "CPU"
    before = _violations(prot)
    try:
        pdb, debug, per_residue = relaxer.process(prot=prot)
    except Exception as exc:  # noqa: BLE001 - any failure of OpenMM leaves the unrelaxed structure, said why
        log.warning("relaxation of %s failed: %s", model, exc)
        return Relaxed(model, time.perf_counter() - t0, platform, before, error=f"{type(exc).__name__}: {exc}")
    return Relaxed(model, time.perf_counter() - t0, platform, before, violations_after=int(sum(per_residue)),
                   energy_before=debug["initial_energy"], energy_after=debug["final_energy"],
                   rmsd=float(debug["rmsd"]), pdb=pdb)


def relax_prediction(prediction: Prediction, which: str, proteins: dict, *, use_gpu: bool | None = None,
                     progress=lambda event, details: None) -> dict[str, Relaxed]:
    """Relax the chosen runs; `proteins` maps each model to its unrelaxed Protein."""
    runs = chosen(prediction, which)
    if use_gpu is None and runs:  # models_to_relax none asks nothing of OpenMM
        use_gpu = jax.default_backend() == "gpu" and cuda_available()
    out: dict[str, Relaxed] = {}
    for run in runs:
        progress("relax_start", {"model": run.model})
        out[run.model] = relaxed = relax_one(run.model, proteins[run.model], use_gpu)
        progress("relax_done", {k: v for k, v in relaxed.summary().items() if v is not None})
    return out


__all__ = ["Relaxed", "chosen", "cuda_available", "relax_one", "relax_prediction"]
