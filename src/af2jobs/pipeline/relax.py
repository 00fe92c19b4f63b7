"""Amber relaxation of the predicted structures: AlphaFold's own relax module (alphafold.relax, OpenMM with the
Amber99sb force field) with AlphaFold 2.3's settings, on OpenMM's CUDA platform where there is one, else its CPU
platform.

    relax_prediction(prediction, which, ...)   models_to_relax: best (AlphaFold's default: the top-ranked model)
                                               | all | none -> {model: Relaxed}

A relaxation that fails (OpenMM cannot minimise the structure, a residue is ill-defined) leaves the unrelaxed
structure as the result; its Relaxed says why (error), and the outputs say the structure is unrelaxed.

How far relaxation moved the model is measured here (`rmsd`: heavy atoms, relaxed against unrelaxed, in place:
the restraints keep the frame), not taken from AlphaFold's minimiser, whose number covers only its last round.
A model that moved more than MOVED_FAR is flagged (`warning`): relaxation is meant to fix clashes, not to change
the fold, and such a model is no longer the one predicted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import jax

from af2jobs.pipeline.results import ModelRun, Prediction

log = logging.getLogger(__name__)

# run_alphafold.py's RELAX_* constants (AlphaFold 2.3).
MAX_ITERATIONS = 0
ENERGY_TOLERANCE = 2.39
STIFFNESS = 10.0
EXCLUDE_RESIDUES: list[int] = []
MAX_OUTER_ITERATIONS = 3
# A relaxed model whose heavy atoms moved more than this (RMSD, Angstrom) from the prediction is flagged: Amber's
# restrained minimisation moves a well-formed model by a few tenths of an Angstrom.
MOVED_FAR = 2.0


@dataclass
class Relaxed:
    model: str
    seconds: float
    platform: str  # OpenMM's: CUDA or CPU
    violations_before: int  # residues with structural violations (clashes, bond lengths and angles)
    violations_after: int | None = None
    energy_before: float | None = None  # kJ/mol, as OpenMM reports
    energy_after: float | None = None
    rmsd: float | None = None  # Angstrom the heavy atoms moved (relaxed against unrelaxed, measured)
    ca_rmsd: float | None = None  # the same for the CA atoms
    pdb: str | None = None  # the relaxed structure; None when relaxation failed
    error: str | None = None  # why it failed
    warning: str | None = None  # a relaxed model that moved more than MOVED_FAR

    def summary(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "pdb"}
        for key in ("seconds", "energy_before", "energy_after", "rmsd", "ca_rmsd"):
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
    try:
        heavy, ca = moved(prot, pdb)
    except Exception as exc:  # noqa: BLE001 - the relaxed structure stands; how far it moved is then unknown
        log.warning("%s: how far relaxation moved it could not be measured (%s)", model, exc)
        heavy = ca = None
    warning = moved_far(model, heavy, ca) if heavy is not None else None
    if warning:
        log.warning(warning)
    return Relaxed(model, time.perf_counter() - t0, platform, before, violations_after=int(sum(per_residue)),
                   energy_before=debug["initial_energy"], energy_after=debug["final_energy"], rmsd=heavy,
                   ca_rmsd=ca, pdb=pdb, warning=warning)


def moved_far(model: str, heavy: float, ca: float) -> str | None:
    """The warning for a relaxed model that moved more than MOVED_FAR, None for one that did not."""
    if heavy <= MOVED_FAR:
        return None
    return (f"relaxation moved {model} by {heavy:.2f} A (heavy atoms; CA {ca:.2f} A), more than {MOVED_FAR} A: the "
            f"relaxed model is not the predicted structure; compare it with unrelaxed_{model}.pdb")


def moved(unrelaxed, relaxed_pdb: str) -> tuple[float, float]:
    """RMSD (Angstrom) between the unrelaxed Protein and the relaxed PDB over the heavy atoms both have, and over
    their CA atoms: residues in order (relaxation neither adds nor drops one: the same residue types in the same
    order are checked), atoms by name, no superposition (relaxation's restraints keep the frame). Hydrogens, which
    relaxation adds, are not among AlphaFold's 37 atom types."""
    import numpy as np
    from alphafold.common import protein, residue_constants

    after = protein.from_pdb_string(relaxed_pdb)
    if after.aatype.tolist() != unrelaxed.aatype.tolist():
        raise ValueError(f"the relaxed structure's {len(after.aatype)} residues are not the prediction's "
                         f"{len(unrelaxed.aatype)}")
    both = (unrelaxed.atom_mask > 0) & (after.atom_mask > 0)
    squared = ((unrelaxed.atom_positions - after.atom_positions) ** 2).sum(-1)
    ca = residue_constants.atom_order["CA"]
    return float(np.sqrt(squared[both].mean())), float(np.sqrt(squared[:, ca][both[:, ca]].mean()))


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


__all__ = ["MOVED_FAR", "Relaxed", "chosen", "cuda_available", "moved", "moved_far", "relax_one", "relax_prediction"]
