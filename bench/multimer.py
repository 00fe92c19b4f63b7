"""Complex benchmark: stock AlphaFold-Multimer (its RunModel, 5 models x N seeds in one process, as run_alphafold
runs them: one RunModel per model, each compiling its own function, predict called once per seed) against af2jobs'
strategies on the same features.

Each mode runs in a fresh process and its whole wall time counts as GPU-seconds. Inputs are synthetic: random
chains of the given lengths, each with a random MSA (`--depth` rows ~70 % identical to it) and 4 template hits, and
for a heteromer a UniProt MSA per chain whose rows carry species identifiers from a shared pool, so that
AlphaFold-Multimer's own pairing (feature_processing.pair_and_merge) pairs them. Untrained parameters of the
official v3 shapes.

    python bench/multimer.py suite --chains 300,300 --out DIR --cache DIR       # stock, best, all side by side
    python bench/multimer.py one --mode best --chains 400,350,250 --json r.json
    python bench/multimer.py memory --totals 2000,3000,4000 --out DIR          # compiled peak memory (no run)

Check it on a CPU first at a tiny size: `suite --chains 30,30 --profile tiny --depth 32 --seeds 1 --models model_1`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))


def complex_features(lengths: list[int], depth: int, seed: int, templates: int = 4) -> dict:
    """AlphaFold-Multimer's merged features of random chains (identical lengths: a homomer of one random chain)."""
    import numpy as np
    from alphafold.data import feature_processing, msa_pairing, pipeline_multimer

    from gpu_inference import synthetic_features

    homomer = len(set(lengths)) == 1
    rng = np.random.default_rng(seed)
    species = np.array([f"SP{i:03d}".encode() for i in range(200)], dtype=object)
    per_length: dict[int, dict] = {}
    chains = {}
    for i, length in enumerate(lengths):
        chain_id = "ABCDEFGHIJ"[i]
        if length not in per_length or not homomer:
            feats = synthetic_features(length, depth, seed + i, templates)
            feats["msa_species_identifiers"] = rng.choice(species, depth)
            feats["msa_species_identifiers"][0] = b""  # row 0 is the query, whose species pairing leaves out
            if not homomer:  # the UniProt rows that pair: the MSA's own rows with species identifiers
                feats.update({f"{k}_all_seq": v for k, v in feats.items()
                              if k in msa_pairing.MSA_FEATURES + ("msa_species_identifiers",)})
            per_length[length] = pipeline_multimer.convert_monomer_features(feats, chain_id=chain_id)
        chains[chain_id] = {k: np.copy(v) for k, v in per_length[length].items()}
    merged = feature_processing.pair_and_merge(pipeline_multimer.add_assembly_features(chains))
    return pipeline_multimer.pad_msa(merged, 512)


def _peak_gib() -> float | None:
    import jax

    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p]
    return round(max(peaks) / 2**30, 2) if peaks else None


def run_stock(args, raw: dict) -> dict:
    """run_alphafold's loop: one RunModel per model (its own jit), predict per seed with its random seed."""
    from alphafold.model import config as af_config
    from alphafold.model import model as af_model

    from af2jobs.pipeline import params as params_mod

    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    models = args.models.split(",")
    runners = len(models) * args.seeds
    runs = []
    for m_index, name in enumerate(models):
        variant = f"{name}_multimer_v3"
        cfg = af_config.model_config(variant) if args.profile == "full" else \
            params_mod.official_config(variant, args.profile)
        cfg.model.global_config.bfloat16 = True
        full, _ = provider.get(variant, args.profile)
        params = params_mod.select(full, params_mod.param_shapes(cfg))
        runner = af_model.RunModel(cfg, params)
        for i in range(args.seeds):
            seed = m_index * args.seeds + i + args.seed * runners
            feat = runner.process_features(params_mod.model_inputs(raw), random_seed=seed)
            t0 = time.perf_counter()
            result, recycles = runner.predict(feat, random_seed=seed)  # the first call compiles
            runs.append({"model": f"{variant}_pred_{i}", "seconds": round(time.perf_counter() - t0, 2),
                         "recycles": int(recycles), "iptm": float(result["iptm"]), "ptm": float(result["ptm"]),
                         "ranking_confidence": float(result["ranking_confidence"])})
            print(json.dumps(runs[-1]), flush=True)
    return {"runs": runs}


def run_af2jobs(args, raw: dict) -> dict:
    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline import predict as predict_mod
    from af2jobs.pipeline.compiled import enable_compilation_cache
    from af2jobs.runconfig import MULTIMER_RECYCLES, MULTIMER_TOLERANCE, RunConfig

    enable_compilation_cache(Path(args.cache) / "jax")
    run = RunConfig(model_preset="multimer", model_names=args.models.split(","), strategy=args.mode,
                    num_multimer_predictions_per_model=args.seeds, num_recycle=MULTIMER_RECYCLES,
                    recycle_tolerance=MULTIMER_TOLERANCE, profile=args.profile, random_seed=args.seed,
                    max_msa_clusters=508, max_extra_msa=2048, gpus=args.gpus)
    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    prediction = predict_mod.Predictor(run, provider).predict(raw)
    return {"runs": [r.summary() for r in prediction.runs], "best": prediction.ranked[0].model}


def one(args) -> int:
    import jax

    lengths = [int(x) for x in args.chains.split(",")]
    raw = complex_features(lengths, args.depth, args.seed)
    result = {"mode": args.mode, "chains": lengths, "total": sum(lengths), "seeds": args.seeds,
              "models": args.models, "device": jax.devices()[0].device_kind}
    try:
        result.update(run_stock(args, raw) if args.mode == "stock" else run_af2jobs(args, raw))
        result["oom"] = False
    except Exception as exc:  # noqa: BLE001 - an out-of-memory is a result here
        if "RESOURCE_EXHAUSTED" not in str(exc) and "out of memory" not in str(exc).lower():
            raise
        result.update(oom=True, error=str(exc)[:300])
    result.update(peak_gib=_peak_gib(), process_s=round(time.perf_counter() - START, 2))
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return 0


def suite(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--chains", args.chains, "--depth", str(args.depth), "--seeds", str(args.seeds), "--models",
              args.models, "--profile", args.profile, "--cache", args.cache, "--seed", str(args.seed)]
    rows = {}
    for mode in args.modes.split(","):
        tag = f"{mode}_{args.chains.replace(',', '+')}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "one", "--mode", mode, "--json", str(out / f"{tag}.json"),
                        *common], check=True)
        rows[mode] = {**json.loads((out / f"{tag}.json").read_text()), "wall_s": round(time.perf_counter() - t0, 2)}
    (out / f"suite_{args.chains.replace(',', '+')}.json").write_text(json.dumps(rows, indent=1))
    for mode, row in rows.items():
        print(f"{mode}: {row['wall_s']} s wall, peak {row['peak_gib']} GiB, best "
              f"{row.get('best') or max(row['runs'], key=lambda r: r['ranking_confidence'])['model']}")
    return 0


def memory(args) -> int:
    """Compiled peak memory of one multimer forward (models 1-3's function) for homodimers of total length T."""
    import jax

    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline.compiled import first_batch
    from af2jobs.runconfig import RunConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    cfg = params_mod.runtime_config("model_1", RunConfig(model_preset="multimer", profile=args.profile,
                                                         max_msa_clusters=508, max_extra_msa=2048))
    from alphafold.model import model as af_model

    shapes = params_mod.param_shapes(cfg)
    params = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), shapes)
    for total in (int(x) for x in args.totals.split(",")):
        raw = params_mod.model_inputs(complex_features([total // 2, total - total // 2], 64, 0))
        runner = af_model.RunModel(cfg)
        batch = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), first_batch(cfg, raw))
        t0 = time.perf_counter()
        m = runner.apply.lower(params, jax.random.PRNGKey(0), batch).compile().memory_analysis()
        need = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / 2**30
        rows.append({"total": total, "compiled_gib": round(need, 2), "compile_s": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    (out / "multimer_memory.json").write_text(json.dumps(rows, indent=1))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("one", "suite"):
        s = sub.add_parser(name)
        s.add_argument("--chains", required=True, help="chain lengths, e.g. 300,300 (a homodimer)")
        s.add_argument("--depth", type=int, default=2000)
        s.add_argument("--seeds", type=int, default=5)
        s.add_argument("--models", default="model_1,model_2,model_3,model_4,model_5")
        s.add_argument("--profile", choices=["full", "tiny"], default="full")
        s.add_argument("--cache", default="/tmp/af2-bench-cache")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--gpus", type=int, default=1)
        if name == "one":
            s.add_argument("--mode", choices=["stock", "best", "all"], required=True)
            s.add_argument("--json", required=True)
        else:
            s.add_argument("--modes", default="best,all,stock")
            s.add_argument("--out", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--totals", required=True)
    m.add_argument("--profile", choices=["full", "tiny"], default="full")
    m.add_argument("--out", required=True)
    args = p.parse_args()
    return {"one": one, "suite": suite, "memory": memory}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
