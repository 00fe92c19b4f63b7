"""Parity at the full architecture: af2jobs' Predictor against AlphaFold's own RunModel (process_features, then
predict: its recycling loop and key splits) on the same raw features, parameters and seeds, in float32 and
bfloat16. tests/pipeline/test_parity_alphafold.py makes the same comparison with the tiny configuration on a CPU.

Inputs are synthetic (bench/gpu_inference.py's): a random query of `--length` residues with a shallow random MSA
(`--depth` rows) and `--templates` template hits; for `--chains`, a complex of random chains (bench/multimer.py's).
Parameters: the official ones when `--params-dir` holds them (ParamsProvider), else untrained ones of the official
shapes.

af2jobs runs in these variants (each against AlphaFold at the run's caps, unpadded):
  exact          fit_msa_to_depth and length_buckets off: the same computation, so ~0 unless the device reorders
  fitted         af2jobs' default: MSA caps lowered to a step above the depth (padded rows are masked)
  gpu-defaults   fitted and the length padded to its bucket, as af2jobs runs on a GPU
On a GPU af2jobs' configuration carries the fused kernels (colabfold_kernels.dispatch()); AlphaFold runs with that
same configuration ("alphafold") and, where it differs, with AlphaFold's own global settings ("alphafold_xla", no
fused kernels). "alphafold_bf16_vs_fp32" is AlphaFold's own bfloat16 result against its float32 one: the yardstick
for what precision alone moves.

    python bench/parity.py --length 300 --chains 150,150 --out parity.json                   # on a GPU
    python bench/parity.py --length 300 --variants exact,fitted,gpu-defaults --params-dir DATA/params
    python bench/parity.py --profile tiny --length 40 --depth 16 --caps 64,128 --recycles 1 \\
        --models model_3 --chains 20,20                                                      # a CPU check

Prints one JSON object (and writes it to --out): per precision, variant and model the largest atom deviation (A),
the CA RMSD without superposition (A), the largest and mean pLDDT difference, the largest PAE difference (A), and
the pTM (and a complex's ipTM) difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
PRECISIONS = {"float32": False, "bfloat16": True}  # name -> RunConfig.bfloat16
VARIANTS = {"exact": {"fit_msa_to_depth": False, "length_buckets": False},
            "fitted": {"fit_msa_to_depth": True, "length_buckets": False},
            "gpu-defaults": {"fit_msa_to_depth": True, "length_buckets": True}}
CA = 1  # atom37 index of CA


def deviation(ours: dict, theirs: dict) -> dict:
    """How far one result is from a reference: atoms, CA, pLDDT, PAE, pTM and ipTM (and both mean pLDDTs)."""
    import numpy as np

    def arr(x):
        return np.asarray(x, np.float64)

    mask = arr(theirs["structure_module"]["final_atom_mask"]) > 0
    d_pos = np.linalg.norm(arr(ours["structure_module"]["final_atom_positions"])
                           - arr(theirs["structure_module"]["final_atom_positions"]), axis=-1)
    d_plddt = np.abs(arr(ours["plddt"]) - arr(theirs["plddt"]))
    out = {
        "max_atom_A": round(float(d_pos[mask].max()), 5),
        "ca_rmsd_A": round(float(np.sqrt((d_pos[:, CA] ** 2).mean())), 5),
        "max_plddt": round(float(d_plddt.max()), 4),
        "mean_plddt": round(float(d_plddt.mean()), 4),
        "mean_plddt_of_each": [round(float(arr(r["plddt"]).mean()), 3) for r in (ours, theirs)],
    }
    if "predicted_aligned_error" in theirs:
        out["max_pae_A"] = round(float(np.abs(arr(ours["predicted_aligned_error"])
                                              - arr(theirs["predicted_aligned_error"])).max()), 4)
    for score in ("ptm", "iptm"):
        if score in theirs:
            out[score] = round(float(abs(arr(ours[score]) - arr(theirs[score]))), 5)
    return out


class AlphaFold:
    """AlphaFold's RunModel per configuration (one per model, as run_alphafold keeps one per model and reuses it
    for each prediction of a complex), results kept for the variants that compare with them."""

    def __init__(self, provider, raw: dict) -> None:
        self.provider = provider
        self.raw = raw
        self._runners: dict = {}
        self._results: dict = {}

    def predict(self, name: str, run, seed: int, xla: bool = False) -> dict:
        from alphafold.model import model as af_model

        from af2jobs.pipeline import params as params_mod

        cfg = params_mod.runtime_config(name, run)
        if xla:
            cfg = xla_config(cfg, run)
        key = (run.variant(name), cfg.to_json(sort_keys=True))
        if key not in self._runners:
            all_params, _ = self.provider.get(run.variant(name), run.profile)
            self._runners[key] = af_model.RunModel(cfg, all_params)
        if (key, seed) not in self._results:
            runner = self._runners[key]
            with params_mod.INPUT_PIPELINE:
                feat = runner.process_features(self.raw, random_seed=seed)
            result, _ = runner.predict(feat, random_seed=seed)
            self._results[key, seed] = result
        return self._results[key, seed]

    def differs_without_kernels(self, name: str, run) -> bool:
        from af2jobs.pipeline import params as params_mod

        cfg = params_mod.runtime_config(name, run)
        return cfg.to_json(sort_keys=True) != xla_config(cfg, run).to_json(sort_keys=True)


def xla_config(cfg, run):
    """The configuration with AlphaFold's own global settings (no fused kernels), the run's precision kept."""
    import copy

    from alphafold.model import config as af_config

    out = copy.deepcopy(cfg)
    stock = af_config.model_config(run.variant("model_1")).model.global_config
    for key, value in stock.items():
        if key not in ("bfloat16", "multimer_mode"):
            out.model.global_config[key] = value
    return out


def _run_config(args, precision: str, variant: str, multimer: bool):
    from af2jobs.runconfig import RunConfig

    values = {"profile": args.profile, "model_names": args.models.split(","), "strategy": "all",
              "num_recycle": args.recycles, "recycle_tolerance": 0.0, "bfloat16": PRECISIONS[precision],
              "max_msa_clusters": args.caps[0], "max_extra_msa": args.caps[1], "random_seed": args.seed,
              **VARIANTS[variant]}
    if multimer:
        values.update(model_preset="multimer", num_multimer_predictions_per_model=args.seeds,
                      fit_msa_to_depth=False, length_buckets=False)
    return RunConfig(**values)


def compare_runs(args, provider, raw: dict, multimer: bool) -> tuple[dict, AlphaFold, dict]:
    """{precision: {variant: {prediction: deviations}}}, the AlphaFold runner set, and the parameter sources."""
    from af2jobs.pipeline.predict import Predictor

    alphafold = AlphaFold(provider, raw)
    out: dict = {}
    sources: dict = {}
    variants = ["exact"] if multimer else args.variants
    for precision in args.precisions:
        for variant in variants:
            run = _run_config(args, precision, variant, multimer)
            unfitted = run.model_copy(update={"fit_msa_to_depth": False, "length_buckets": False})
            t0 = time.perf_counter()
            prediction = Predictor(run, provider).predict(raw)
            rows = {}
            for ours in prediction.runs:
                row = {"recycles": ours.recycles, "msa_caps": list(prediction.msa_caps),
                       "alphafold": deviation(ours.result, alphafold.predict(ours.base_model, unfitted, ours.seed))}
                if alphafold.differs_without_kernels(ours.base_model, unfitted):
                    row["alphafold_xla"] = deviation(
                        ours.result, alphafold.predict(ours.base_model, unfitted, ours.seed, xla=True))
                rows[ours.model] = row
                sources[ours.params.model] = ours.params.source
            rows["seconds"] = round(time.perf_counter() - t0, 1)
            out.setdefault(precision, {})[variant] = rows
            print(json.dumps({"multimer": multimer, "precision": precision, "variant": variant, **rows}),
                  file=sys.stderr, flush=True)
    return out, alphafold, sources


def precision_yardstick(args, alphafold: AlphaFold, multimer: bool) -> dict:
    """AlphaFold's own bfloat16 result against its float32 one, per prediction."""
    if set(args.precisions) != set(PRECISIONS):
        return {}
    fp32 = _run_config(args, "float32", "exact", multimer)
    bf16 = _run_config(args, "bfloat16", "exact", multimer)
    rows = {}
    for model_index, name in enumerate(fp32.model_names):
        for i in range(fp32.seeds):
            seed = fp32.seed_of(model_index, i)
            rows[fp32.prediction_name(name, i)] = deviation(alphafold.predict(name, bf16, seed),
                                                            alphafold.predict(name, fp32, seed))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=300, help="the monomer's residues (0: no monomer)")
    p.add_argument("--depth", type=int, default=64, help="MSA rows of each synthetic MSA")
    p.add_argument("--templates", type=int, default=4)
    p.add_argument("--chains", default="", help="a complex's chain lengths, e.g. 150,150 (empty: no complex)")
    p.add_argument("--seeds", type=int, default=1, help="a complex's predictions per model")
    p.add_argument("--models", default="model_1,model_3")
    p.add_argument("--recycles", type=int, default=3)
    p.add_argument("--caps", default="512,5120", help="max_msa_clusters,max_extra_msa (a complex: at most 508,2048)")
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--variants", default="exact,fitted", help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--profile", choices=["full", "tiny"], default="full")
    p.add_argument("--params-dir", help="official parameters (params_model_1_ptm.npz ...); else untrained")
    p.add_argument("--cache", default=os.environ.get("AF2_BENCH_CACHE", "/tmp/af2bench"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    args.caps = tuple(int(x) for x in args.caps.split(","))
    args.precisions = args.precisions.split(",")
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS] + [x for x in args.precisions if x not in PRECISIONS]
    if unknown:
        p.error(f"unknown variant or precision: {', '.join(unknown)}")

    import jax

    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline.compiled import enable_compilation_cache
    from gpu_inference import synthetic_features
    from multimer import complex_features

    cache = Path(args.cache)
    enable_compilation_cache(cache / "jax")
    provider = params_mod.ParamsProvider(Path(args.params_dir) if args.params_dir else cache / "no-official",
                                         cache / "params")
    device = jax.devices()[0]
    report = {"device": f"{device.platform}:{getattr(device, 'device_kind', '')}", "profile": args.profile,
              "length": args.length, "depth": args.depth, "templates": args.templates, "chains": args.chains,
              "caps": list(args.caps), "recycles": args.recycles, "seed": args.seed, "params": {}}
    if args.length:
        raw = synthetic_features(args.length, args.depth, args.seed, args.templates)
        report["monomer"], alphafold, sources = compare_runs(args, provider, raw, multimer=False)
        report["monomer_alphafold_bf16_vs_fp32"] = precision_yardstick(args, alphafold, multimer=False)
        report["params"].update(sources)
    if args.chains:
        raw = complex_features([int(x) for x in args.chains.split(",")], args.depth, args.seed)
        report["complex"], alphafold, sources = compare_runs(args, provider, raw, multimer=True)
        report["complex_alphafold_bf16_vs_fp32"] = precision_yardstick(args, alphafold, multimer=True)
        report["params"].update(sources)
    report["seconds"] = round(time.perf_counter() - START, 1)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
