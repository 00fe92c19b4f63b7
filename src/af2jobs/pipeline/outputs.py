"""Outputs in AlphaFold's layout: ranked_*.pdb/.cif, ranking_debug.json, timings.json, versions.json,
per-model confidence JSON, features.pkl and msas/.

Every file that carries a structure or a score says plainly when the parameters were UNTRAINED.
"""

from __future__ import annotations

import textwrap
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
from alphafold.common import protein

import af2jobs
from af2jobs import atomic
from af2jobs.pipeline.relax import Relaxed
from af2jobs.pipeline.results import ModelRun, Prediction

TEMPLATE_MODELS = ("model_1", "model_2")  # the models trained with templates, which use them
UNTRAINED_NOTE = (
    "UNTRAINED PARAMETERS: deterministic random weights of the official AlphaFold2 shapes, not the published "
    "weights. This structure and its confidence scores carry no biological meaning."
)
_PACKAGES = ("alphafold-colabfold", "jax", "jaxlib", "dm-haiku", "pyhmmer", "numpy")


def _round(values, digits: int = 2) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def unrelaxed_protein(run: ModelRun, features: dict) -> protein.Protein:
    plddt = np.asarray(run.result["plddt"], dtype=np.float64)
    mask = run.result["structure_module"]["final_atom_mask"]
    length = len(plddt)  # the features may be padded to a length bucket; the result is not
    if "asym_id" in features:  # a complex: chains A, B, ... from asym_id 1, 2, ...; residues numbered per chain
        fold = run.result["structure_module"]
        return protein.Protein(
            aatype=np.asarray(features["aatype"][:length]), atom_positions=fold["final_atom_positions"],
            atom_mask=mask, residue_index=np.asarray(features["residue_index"][:length]) + 1,
            chain_index=np.asarray(features["asym_id"][:length]).astype(np.int32) - 1,
            b_factors=plddt[:, None] * mask)
    own = {k: features[k][:, :length] for k in ("aatype", "residue_index")}
    return protein.from_prediction(
        features=own, result=run.result, b_factors=plddt[:, None] * mask,
        remove_leading_feature_dimension=True,
    )


def _relax_line(relaxed: Relaxed | None, relaxed_form: bool) -> str:
    if relaxed_form:
        moved = f"; moved {relaxed.rmsd:.2f} A" if relaxed.rmsd is not None else ""
        far = " (WARNING: moved far from the prediction)" if relaxed.warning else ""
        return (f"Amber-relaxed (AlphaFold relax, OpenMM {relaxed.platform}): residues with violations "
                f"{relaxed.violations_before} before, {relaxed.violations_after} after{moved}{far}")
    if relaxed is not None and relaxed.error:
        return f"unrelaxed: the Amber relaxation failed ({relaxed.error[:200]})"
    return "unrelaxed (not Amber-relaxed)"


def _remarks(name: str, run: ModelRun, strategy: str, relaxed: Relaxed | None = None,
             relaxed_form: bool = False) -> list[str]:
    lines = [
        f"af2jobs {af2jobs.__version__} prediction of {name}",
        f"model {run.params.model}, {run.recycles} recycles, strategy {strategy}",
        f"mean pLDDT {run.mean_plddt:.2f}" + (f", pTM {run.ptm:.3f}" if run.ptm is not None else "")
        + (f", ipTM {run.iptm:.3f}" if run.iptm is not None else ""),
        "B-factor column holds per-residue pLDDT (0-100)",
        f"parameters: {run.params.source}, {run.params.release}, sha256 {run.params.sha256[:16]}",
        _relax_line(relaxed, relaxed_form),
    ]
    if run.params.untrained:
        lines += ["UNTRAINED PARAMETERS: random weights of the official shapes,",
                  "not the published weights. This structure carries no biological meaning."]
    return lines


def pdb_text(prot: protein.Protein, remarks: list[str]) -> str:
    wrapped = [part for line in remarks for part in textwrap.wrap(line, 69)]
    return "".join(f"REMARK   1 {part}\n" for part in wrapped) + protein.to_pdb(prot)


def cif_text(prot: protein.Protein, remarks: list[str], name: str) -> str:
    kind = "Multimer" if len(np.unique(prot.chain_index)) > 1 else "Monomer"
    body = protein.to_mmcif(prot, file_id=name, model_type=kind)
    return "".join(f"# {line}\n" for line in remarks) + body


def confidence(run: ModelRun) -> dict:
    r = run.result
    out = {
        "model": run.params.model, "phase": run.phase, "recycles": run.recycles,
        "untrained": run.params.untrained,
        "mean_plddt": round(run.mean_plddt, 3), "plddt": _round(r["plddt"]),
        "ranking_confidence": round(run.ranking_confidence, 3),
    }
    if run.ptm is not None:
        out["ptm"] = round(run.ptm, 4)
    if run.iptm is not None:
        out.update(iptm=round(run.iptm, 4), seed=run.seed)
    if "predicted_aligned_error" in r and run.phase == "full":  # a screen's PAE is not worth keeping
        out["max_predicted_aligned_error"] = float(r["max_predicted_aligned_error"])
        out["predicted_aligned_error"] = _round(r["predicted_aligned_error"], 2)
    return out


def pae_afdb(run: ModelRun) -> list[dict] | None:
    """The predicted aligned error as the AlphaFold Protein Structure Database serves it (and AlphaFold 2.3 writes
    pae_<model>.json): [{"predicted_aligned_error": [[...]], "max_predicted_aligned_error": X}]. None without a
    pTM head."""
    r = run.result
    if "predicted_aligned_error" not in r:
        return None
    return [{"predicted_aligned_error": _round(r["predicted_aligned_error"], 2),
             "max_predicted_aligned_error": round(float(r["max_predicted_aligned_error"]), 2)}]


def ranking_debug(prediction: Prediction, rank_by: str) -> dict:
    multimer = prediction.ranked[0].iptm is not None
    metric = "iptm+ptm" if multimer else "ptms" if rank_by == "ptm" else "plddts"
    extra = {}
    if multimer:  # AlphaFold-Multimer's ranking_debug.json: 0.8 ipTM + 0.2 pTM (here on a 0-100 scale), and both
        extra = {"iptm": {r.model: round(r.iptm, 4) for r in prediction.ranked},
                 "ptm": {r.model: round(r.ptm, 4) for r in prediction.ranked if r.ptm is not None}}
    return {
        metric: {r.model: round(r.ranking_confidence, 4) for r in prediction.ranked},
        **extra,
        "order": [r.model for r in prediction.ranked],
        "strategy": prediction.strategy,
        "screen": {r.model: round(r.ranking_confidence, 4) for r in prediction.runs if r.phase == "screen"},
        "untrained": any(r.params.untrained for r in prediction.runs),
    }


def versions(prediction: Prediction, databases: list[dict], run_config: dict, device: str,
             msa_supplied: bool = False, templates: dict | None = None, msa_depth: dict | None = None,
             msa_engine: str | None = None) -> dict:
    pkgs = {}
    for pkg in _PACKAGES:
        try:
            pkgs[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pkgs[pkg] = None
    params = {}
    for r in prediction.runs:
        params[r.params.model] = r.params.to_dict()
    untrained = any(p["source"] == "UNTRAINED" for p in params.values())
    return {
        "af2jobs": af2jobs.__version__,
        "alphafold": pkgs.pop("alphafold-colabfold"),
        "packages": pkgs,
        "python": platform.python_version(),
        "device": device,
        "params": params,
        "params_status": "UNTRAINED" if untrained else "official",
        "note": UNTRAINED_NOTE if untrained else None,
        "databases": databases,
        "db_preset": run_config["db_preset"],
        "model_preset": run_config["model_preset"],
        "msa_supplied": msa_supplied,  # the request (or --msa) brought the MSA: no database was searched
        # msa_mode mmseqs2: which MMseqs2 binary searched, and on the GPU or the CPU (af2jobs.pipeline.mmseqs.plan)
        "msa_engine": msa_engine,
        # The templates models 1 and 2 used (af2jobs.pipeline.templates): PDB id, chain, release date; None when
        # no template database is installed.
        "templates": templates,
        "msa_depth_caps": {"max_msa_clusters": run_config["max_msa_clusters"],
                           "max_extra_msa": run_config["max_extra_msa"]},
        # The MSA's rows given, after de-duplication and read by the best model (features.depth_summary).
        "msa_depth": msa_depth,
        "run_config": run_config,
        "model_config_fingerprint": prediction.config_fingerprint,
    }


def write_structures(out: Path, name: str, prediction: Prediction, rank_by: str, proteins: dict,
                     relaxed: dict[str, Relaxed] | None = None, templates: dict | None = None) -> None:
    """AlphaFold's structure files: unrelaxed_<model> for every ranked model, relaxed_<model> for each one the Amber
    relaxation finished, and ranked_<i> in ranking order, the relaxed form where there is one (AlphaFold writes
    ranked_* the same way)."""
    relaxed = relaxed or {}
    for i, run in enumerate(prediction.ranked):
        model, attempt = run.model, relaxed.get(run.model)
        unrelaxed = (pdb_text(proteins[model], _remarks(name, run, prediction.strategy, attempt)),
                     cif_text(proteins[model], _remarks(name, run, prediction.strategy, attempt), name))
        _write_pair(out, f"unrelaxed_{model}", unrelaxed)
        best = unrelaxed
        if attempt is not None and attempt.pdb is not None:
            remarks = _remarks(name, run, prediction.strategy, attempt, relaxed_form=True)
            wrapped = [part for line in remarks for part in textwrap.wrap(line, 69)]
            best = ("".join(f"REMARK   1 {part}\n" for part in wrapped) + attempt.pdb,
                    cif_text(protein.from_pdb_string(attempt.pdb), remarks, name))
            _write_pair(out, f"relaxed_{model}", best)
        _write_pair(out, f"ranked_{i}", best)
    for run in prediction.runs:
        atomic.write_json(out / f"confidence_{run.model}_{run.phase}.json", confidence(run))
        if run.phase == "full" and (pae := pae_afdb(run)) is not None:
            atomic.write_json(out / f"{run.model}_predicted_aligned_error_v1.json", pae, indent=None)
    # Models 1-2 of a monomer, every multimer model (screens included).
    with_templates = [r.model for r in prediction.runs if r.model in TEMPLATE_MODELS or r.iptm is not None]
    atomic.write_json(out / "ranking_debug.json", {
        **ranking_debug(prediction, rank_by),
        "relax": {m: r.summary() for m, r in relaxed.items()},
        "templates": {"used": (templates or {}).get("used", []), "by_models": sorted(set(with_templates)),
                      "max_template_date": (templates or {}).get("max_template_date")},
    })


def _write_pair(out: Path, stem: str, texts: tuple[str, str]) -> None:
    (out / f"{stem}.pdb").write_text(texts[0])
    (out / f"{stem}.cif").write_text(texts[1])
