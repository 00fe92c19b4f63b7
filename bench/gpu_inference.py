"""GPU inference benchmark: stock AlphaFold2 (RunModel as AlphaFold runs it) against af2jobs' strategies.

Each prediction runs in a fresh process, as an AWS Batch job runs it, and the process's whole wall time counts as
its GPU-seconds (imports, parameter loading, compile and run). Inputs are synthetic: a random query of length L and
a random MSA of realistic depth (default 6,000 rows: 508 cluster centres + 5,120 extra sequences after sampling)
with untrained parameters of the official shapes.

    python bench/gpu_inference.py suite --lengths 126,331 --out DIR      # the side-by-side table
    python bench/gpu_inference.py one --mode stock --length 126 --json r.json
    python bench/gpu_inference.py memory --lengths 2000,4000 --out DIR   # compiled peak memory (no run)
    python bench/gpu_inference.py ceilings --out DIR                      # measured bf16 matmul and copy rates
    python bench/gpu_inference.py flops --lengths 126,1396 --out DIR      # FLOPs per recycling iteration (no GPU)
    python bench/gpu_inference.py one --mode af2jobs --strategy all --gpus 2 --length 1396 --json r.json

Check it on a CPU first at a tiny size: `suite --lengths 40 --profile tiny --depth 64`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
MODELS = ("model_1", "model_2", "model_3", "model_4", "model_5")


def synthetic_features(length: int, depth: int, seed: int, templates: int = 0) -> dict:
    """Raw AlphaFold features of a random sequence with `depth` MSA rows, each ~70 % identical to the query, and
    `templates` template hits (AlphaFold's template features: the query's residues on a random-walk backbone
    covering 90 % of it); with none, the empty template features AlphaFold makes when it finds no hit."""
    import numpy as np
    from alphafold.common import residue_constants as rc
    from alphafold.data import pipeline
    from alphafold.data import templates as af_templates

    rng = np.random.default_rng(seed)
    letters = np.array(list(rc.restypes))
    query = "".join(rng.choice(letters, length))
    feats = pipeline.make_sequence_features(query, "synthetic", length)
    q = np.array([rc.HHBLITS_AA_TO_ID[c] for c in query], np.int32)
    msa = np.repeat(q[None], depth, axis=0)
    mutate = rng.random(msa.shape) < 0.3
    msa[mutate] = rng.integers(0, 21, int(mutate.sum()))
    msa[0] = q
    feats.update({
        "msa": msa, "deletion_matrix_int": np.zeros_like(msa),
        "num_alignments": np.full(length, depth, np.int32),
        "msa_species_identifiers": np.array([b""] * depth, dtype=object),
    })
    if not templates:
        feats.update({k: np.array([], dtype=t) for k, t in af_templates.TEMPLATE_FEATURES.items()})
        return feats
    aatype = np.zeros((templates, length, len(rc.restypes_with_x_and_gap)), np.float32)
    aatype[:, np.arange(length), [rc.restype_order.get(c, 20) for c in query]] = 1.0
    steps = rng.normal(size=(templates, length, 3))
    ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True), axis=1)
    positions = np.repeat(ca[:, :, None, :], rc.atom_type_num, axis=2) + rng.normal(0, 0.7, (templates, length,
                                                                                               rc.atom_type_num, 3))
    masks = np.zeros((templates, length, rc.atom_type_num), np.float32)
    covered = np.arange(length) < int(0.9 * length)
    masks[:, covered, :5] = 1.0  # N, CA, C, CB, O
    feats.update({
        "template_aatype": aatype, "template_all_atom_masks": masks,
        "template_all_atom_positions": (positions * masks[..., None]).astype(np.float32),
        "template_domain_names": np.array([f"t{i:03d}_A".encode() for i in range(templates)], dtype=object),
        "template_sequence": np.array([query.encode()] * templates, dtype=object),
        "template_sum_probs": np.linspace(90, 60, templates, dtype=np.float32)[:, None],
    })
    return feats


def _peak_gib() -> float | None:
    """The largest peak over the process's devices (one per GPU the run used)."""
    import jax

    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return round(max(peaks) / 2**30, 2) if peaks else None


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def run_stock(args) -> dict:
    """AlphaFold's own RunModel for each model: its own jit, no persistent cache, no padding, no fused kernels."""
    import jax
    from alphafold.model import config as af_config
    from alphafold.model import model as af_model

    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline.compiled import first_batch

    raw = synthetic_features(args.length, args.depth, args.length, args.templates)
    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    runs = []
    for name in args.models.split(","):
        cfg = af_config.model_config(f"{name}_ptm") if args.profile == "full" else \
            params_mod.official_config(f"{name}_ptm", args.profile)
        cfg.data.eval.num_ensemble = 1
        if not args.templates:  # the earlier template-free comparison (--templates 0)
            cfg.data.common.use_templates = False
            cfg.data.common.reduce_msa_clusters_by_max_templates = False
            cfg.model.embeddings_and_evoformer.template.enabled = False
        cfg.model.global_config.bfloat16 = not args.fp32
        full, _ = provider.get(f"{name}_ptm", args.profile)
        params = params_mod.select(full, params_mod.param_shapes(cfg))
        runner = af_model.RunModel(cfg, params)
        feat = runner.process_features(raw, random_seed=0)
        t0 = time.perf_counter()
        compiled = runner.apply.lower(params, jax.random.PRNGKey(0), first_batch(cfg, feat)).compile()
        compile_s = time.perf_counter() - t0
        runner.apply = compiled
        t0 = time.perf_counter()
        result, recycles = runner.predict(feat, random_seed=0)
        runs.append({"model": name, "compile_s": round(compile_s, 2), "run_s": round(time.perf_counter() - t0, 2),
                     "recycles": int(recycles), "mean_plddt": float(result["mean_plddt"])})
        if args.save_result:
            _save(args.save_result, result)
    return {"runs": runs}


def _af2jobs_run(args):
    from af2jobs.runconfig import RunConfig

    return RunConfig(model_names=args.models, strategy=args.strategy, profile=args.profile,
                     length_buckets=not args.fp32, bfloat16=not args.fp32,
                     recycle_tolerance=args.tolerance, gpus=args.gpus, num_recycle=args.recycles)


def run_inputs(args) -> dict:
    """The CPU stage's part (as the MSA job does it): AlphaFold's input pipeline for each model configuration of
    the GPU run, written to --inputs for the GPU process. No GPU: JAX is kept on the CPU."""
    from af2jobs.pipeline import inputs

    raw = synthetic_features(args.length, args.depth, args.length, args.templates)
    t0 = time.perf_counter()
    files = inputs.prepare_inputs(_af2jobs_run(args), raw, Path(args.inputs))
    return {"inputs_s": round(time.perf_counter() - t0, 2), "files": files}


def run_af2jobs(args) -> dict:
    from af2jobs.pipeline import compiled, predict
    from af2jobs.pipeline import params as params_mod

    compiled.enable_compilation_cache(Path(args.cache) / "jax")
    raw = synthetic_features(args.length, args.depth, args.length, args.templates)
    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    predictor = predict.Predictor(_af2jobs_run(args), provider, inputs_dir=Path(args.inputs) if args.inputs else None)
    prediction = predictor.predict(raw)
    out = {"runs": [r.summary() for r in prediction.runs], "best": prediction.ranked[0].model,
           "inputs_used": predictor.inputs_used}
    entry = next(iter(compiled.Compiled._cache.values()))
    cost = entry.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    out["cost_per_iteration"] = {"flops": cost.get("flops"), "bytes": cost.get("bytes accessed")}
    if args.save_result:
        _save(args.save_result, prediction.ranked[0].result)
    return out


def _save(path: str, result: dict) -> None:
    import numpy as np

    np.savez(path, positions=np.asarray(result["structure_module"]["final_atom_positions"]),
             mask=np.asarray(result["structure_module"]["final_atom_mask"]), plddt=np.asarray(result["plddt"]))


def one(args) -> int:
    record = {"mode": args.mode, "length": args.length, "strategy": args.strategy, "models": args.models,
              "fp32": args.fp32, "gpus": args.gpus, "recycles": args.recycles, "templates": args.templates}
    try:
        import jax

        record["device"] = str(jax.devices()[0].device_kind)
        runner = {"stock": run_stock, "af2jobs": run_af2jobs, "inputs": run_inputs}[args.mode]
        record.update(runner(args))
        record["oom"] = False
    except Exception as exc:  # noqa: BLE001 - the benchmark records any failure, out-of-memory above all
        record["oom"] = _is_oom(exc)
        record["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    record["peak_gib"] = _peak_gib()
    record["process_s"] = round(time.perf_counter() - START, 2)
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record))
    return 0


def _child(out: Path, tag: str, extra: list[str], common: list[str], cpu: bool = False) -> dict:
    path = out / f"{tag}.json"
    t0 = time.perf_counter()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"} if cpu else None
    proc = subprocess.run([sys.executable, __file__, "one", "--json", str(path), *extra, *common],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if not path.is_file():
        return {"tag": tag, "error": proc.stderr[-2000:], "wall_s": wall}
    record = json.loads(path.read_text())
    record.update({"tag": tag, "wall_s": round(wall, 2)})
    return record


def suite(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--cache", args.cache, "--depth", str(args.depth), "--profile", args.profile,
              "--templates", str(args.templates)]
    # Parameters come from the shared file system in production: generate them once, uncounted.
    subprocess.run([sys.executable, __file__, "prepare", *common], check=True)
    results = []
    for length in [int(x) for x in args.lengths.split(",")]:
        row = {"length": length}
        # Stock: --stock-five runs AlphaFold's way, five RunModels in one process, each compiling its own function;
        # else model_3 alone, counted five times (each of the five compiles the same way without templates).
        if not args.no_stock:
            models = ",".join(MODELS) if args.stock_five else "model_3"
            row["stock"] = _child(out, f"stock_{length}", ["--mode", "stock", "--length", str(length), "--models",
                                                            models], common)
        # Warm the shared compile cache as an earlier job of a nearby length would (same bucket), not counted:
        # both functions (models 1-2 with templates, 3-5 without).
        warm = max(16, length - 2)
        row["warmup"] = _child(out, f"warm_{length}", ["--mode", "af2jobs", "--length", str(warm), "--models",
                                                        "model_1,model_3", "--strategy", "all"], common)
        for strategy in args.strategies.split(","):
            tag = f"{strategy.replace(':', '_')}_{length}"
            run = ["--length", str(length), "--models", ",".join(MODELS), "--strategy", strategy]
            if not args.no_inputs:  # the input pipeline in the CPU stage, as the MSA job runs it: not GPU time
                inputs = Path(args.cache) / "inputs" / tag
                row[f"{strategy}_cpu_stage"] = _child(out, f"inputs_{tag}", ["--mode", "inputs", *run, "--inputs",
                                                                             str(inputs)], common, cpu=True)
                run += ["--inputs", str(inputs)]
            row[strategy] = _child(out, tag, ["--mode", "af2jobs", *run], common)
        if args.all_gpus > 1:  # strategy all with its models spread over several GPUs
            row[f"all_{args.all_gpus}gpus"] = _child(
                out, f"all_{args.all_gpus}gpus_{length}", ["--mode", "af2jobs", "--length", str(length), "--models",
                                                           ",".join(MODELS), "--strategy", "all", "--gpus",
                                                           str(args.all_gpus)], common)
        results.append(row)
        (out / "suite.json").write_text(json.dumps(results, indent=1))
        print(_table_row(row), flush=True)
    print(table(results))
    return 0


def _table_row(row: dict) -> str:
    return json.dumps({k: (v.get("wall_s"), v.get("oom")) if isinstance(v, dict) else v for k, v in row.items()})


def table(results: list[dict]) -> str:
    lines = ["| length | stock first model: compile s / run s | stock 5 models GPU-s | best GPU-s | "
             "best: compile s / forward s per model | best / stock | peak GiB (stock / best) |",
             "|---|---|---|---|---|---|---|"]
    for row in results:
        s, b = row.get("stock", {}), row.get("best", {})
        if "runs" not in s or "runs" not in b:
            lines.append(f"| {row['length']} | {s.get('error', '')[:60]} | | | | | |")
            continue
        stock_run = s["runs"][0]
        stock5 = s["wall_s"] if len(s["runs"]) == 5 else 5 * s["wall_s"]
        full = [r for r in b["runs"] if r["phase"] == "full"][0]
        compile_s = sum(r["compile_s"] for r in b["runs"])
        lines.append(
            f"| {row['length']} | {stock_run['compile_s']} / {stock_run['run_s']} | {stock5:.0f} | {b['wall_s']:.0f} | "
            f"{compile_s:.1f} / {full['run_s']:.2f} | {b['wall_s'] / stock5:.3f} | {s['peak_gib']} / {b['peak_gib']} |")
    return "\n".join(lines)


def prepare(args) -> int:
    from af2jobs.pipeline import params as params_mod

    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    for name in MODELS:
        provider.get(f"{name}_ptm", args.profile)
    return 0


def compare(args) -> int:
    """Numerical difference of the fast path (bf16, fused kernels, length bucket) to the float32 path of stock
    AlphaFold, on the same parameters and features; stock's own bf16 path is the yardstick for 'noise'."""
    import numpy as np

    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        results = {}
        for tag, mode, fp32 in (("stock_fp32", "stock", True), ("stock_bf16", "stock", False),
                                ("af2jobs", "af2jobs", False)):
            path = Path(args.out) / f"cmp_{tag}_{length}.npz"
            extra = ["--fp32"] if fp32 else []
            subprocess.run([sys.executable, __file__, "one", "--mode", mode, "--length", str(length), "--models",
                            "model_3", "--strategy", "all", "--save-result", str(path), "--json",
                            str(path.with_suffix(".json")), "--cache", args.cache, "--depth", str(args.depth),
                            "--profile", args.profile, *extra], check=True, capture_output=True)
            results[tag] = np.load(path)
        ref = results["stock_fp32"]
        ca = 1  # atom37 index of CA
        row = {"length": length}
        for tag in ("stock_bf16", "af2jobs"):
            r = results[tag]
            row[tag] = {
                "max_abs_d_ca_A": float(np.abs(r["positions"][:, ca] - ref["positions"][:, ca]).max()),
                "max_abs_d_plddt": float(np.abs(r["plddt"] - ref["plddt"]).max()),
                "mean_abs_d_plddt": float(np.abs(r["plddt"] - ref["plddt"]).mean()),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    (Path(args.out) / "compare.json").write_text(json.dumps(rows, indent=1))
    return 0


def memory(args) -> int:
    """Compile the af2jobs model at each length and read XLA's memory analysis: will it fit, without running."""
    import jax

    from alphafold.model import model as af_model

    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline.compiled import enable_compilation_cache, first_batch
    from af2jobs.pipeline.inputs import process_features
    from af2jobs.runconfig import RunConfig, bucket_length

    enable_compilation_cache(Path(args.cache) / "jax")
    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        run = RunConfig(model_names="model_3", profile=args.profile, length_buckets=True)
        cfg = params_mod.runtime_config("model_3", run)
        raw = synthetic_features(length, args.depth, length)
        feat = process_features(cfg, raw, 0, bucket_length(length))
        full, _ = provider.get("model_3_ptm", args.profile)
        params = params_mod.select(full, params_mod.param_shapes_for(cfg))
        t0 = time.perf_counter()
        compiled = af_model.RunModel(cfg).apply.lower(
            params, jax.random.PRNGKey(0), first_batch(cfg, feat)).compile()
        m = compiled.memory_analysis()
        need = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes) / 2**30
        rows.append({"length": length, "bucket": bucket_length(length), "compile_s": round(time.perf_counter() - t0, 1),
                     "temp_gib": round(m.temp_size_in_bytes / 2**30, 2), "total_gib": round(need, 2)})
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "memory.json").write_text(json.dumps(rows, indent=1))
    return 0


def flops(args) -> int:
    """FLOPs of one recycling iteration (one apply) at each length, counted by XLA's cost analysis.

    XLA's cost analysis counts the body of a loop once, and AlphaFold runs its Evoformer, extra-MSA stack and
    structure module as scans (and chunked attention as scans over chunks). Here every scan is unrolled and the
    chunking switched off before lowering, so each layer is counted; the fused Pallas kernels (GPU only) are not
    used, so the count is of the plain XLA path, at the sequence's own length (no bucket padding). Lowering only:
    this runs on a CPU.

    Also a lower bound of device memory traffic per iteration: each of the 48 + 4 blocks reads and writes its MSA
    and pair activations once (bf16), and the parameters are read once. XLA's own "bytes accessed" is before
    fusion, so it counts every intermediate and is no floor; it is reported for reference.
    """
    import haiku as hk
    import jax

    from alphafold.model import model as af_model

    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline.compiled import first_batch
    from af2jobs.pipeline.inputs import process_features
    from af2jobs.runconfig import RunConfig

    scan = hk.scan

    def unrolled(f, init, xs=None, length=None, reverse=False, unroll=1):
        return scan(f, init, xs, length=length, reverse=reverse, unroll=True)

    hk.scan = unrolled  # read at call time by alphafold.model's layer_stack, folding and mapping
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        run = RunConfig(model_names="model_3", profile=args.profile, length_buckets=False)
        cfg = params_mod.runtime_config("model_3", run)
        cfg.model.global_config.subbatch_size = 1 << 30  # no chunking: one slice covers every dimension
        feat = process_features(cfg, synthetic_features(length, args.depth, length), 0, length)
        shapes = params_mod.param_shapes_for(cfg)
        params = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), shapes)
        lowered = af_model.RunModel(cfg).apply.lower(params, jax.random.PRNGKey(0), first_batch(cfg, feat))
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        e = cfg.model.embeddings_and_evoformer
        n_msa, n_extra = feat["msa_feat"].shape[1], feat["extra_msa"].shape[1]
        pair = length * length * e.pair_channel
        traffic = 2 * 2 * (e.evoformer_num_block * (n_msa * length * e.msa_channel + pair)
                           + e.extra_msa_stack_num_block * (n_extra * length * e.extra_msa_channel + pair))
        n_params = sum(x.size for x in jax.tree_util.tree_leaves(shapes))
        traffic += 4 * n_params
        rows.append({"length": length, "msa_rows": int(n_msa), "extra_msa_rows": int(n_extra),
                     "tflop_per_iteration": round(cost["flops"] / 1e12, 3),
                     "min_traffic_gb_per_iteration": round(traffic / 1e9, 2),
                     "xla_bytes_accessed_gb_unfused": round(cost.get("bytes accessed", 0) / 1e9, 1)})
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "flops.json").write_text(json.dumps(rows, indent=1))
    return 0


def ceilings(args) -> int:
    """Measured bf16 matrix rate and device memory bandwidth: the ceilings the floor is computed against."""
    import jax
    import jax.numpy as jnp

    n = args.matmul_n
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(20):
        c = mm(a, b)
    c.block_until_ready()
    tflops = 2 * n**3 * 20 / (time.perf_counter() - t0) / 1e12
    x = jax.random.normal(jax.random.PRNGKey(2), (args.copy_mib * 2**20 // 4,), jnp.float32)
    cp = jax.jit(lambda v: v * 1.0001)
    cp(x).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(20):
        y = cp(x)
    y.block_until_ready()
    tbps = 2 * x.nbytes * 20 / (time.perf_counter() - t0) / 1e12
    out = {"bf16_matmul_tflops": round(tflops, 1), "copy_tb_per_s": round(tbps, 2), "matmul_n": n}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "ceilings.json").write_text(json.dumps(out))
    print(json.dumps(out))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("one", "suite", "memory", "ceilings", "prepare", "compare", "flops"):
        s = sub.add_parser(name)
        s.add_argument("--cache", default=os.environ.get("AF2_BENCH_CACHE", "/tmp/af2bench"))
        s.add_argument("--profile", default="full", choices=["full", "tiny"])
        s.add_argument("--depth", type=int, default=6000)
        s.add_argument("--out", default="bench-out")
        s.add_argument("--templates", type=int, default=4, help="template hits in the features (models 1-2 use "
                                                                 "them; 0: the earlier template-free runs)")
    one_p = sub.choices["one"]
    one_p.add_argument("--mode", choices=["stock", "af2jobs", "inputs"], required=True,
                       help="inputs: the CPU stage's input pipeline for an af2jobs run, into --inputs")
    one_p.add_argument("--inputs", help="af2jobs: processed features the CPU stage prepared (--mode inputs)")
    one_p.add_argument("--length", type=int, required=True)
    one_p.add_argument("--models", default=",".join(MODELS))
    one_p.add_argument("--strategy", default="best")
    one_p.add_argument("--tolerance", type=float, default=0.0)
    one_p.add_argument("--fp32", action="store_true")
    one_p.add_argument("--gpus", type=int, default=1, help="af2jobs: devices for strategy all")
    one_p.add_argument("--recycles", type=int, default=3, help="af2jobs: recycling iterations after the first")
    one_p.add_argument("--save-result")
    one_p.add_argument("--json", required=True)
    sub.choices["suite"].add_argument("--lengths", required=True)
    sub.choices["suite"].add_argument("--strategies", default="best")
    sub.choices["suite"].add_argument("--no-stock", action="store_true", help="af2jobs only (stock measured before)")
    sub.choices["suite"].add_argument("--no-inputs", action="store_true",
                                      help="af2jobs processes its own features on the GPU machine (the older runs)")
    sub.choices["suite"].add_argument("--all-gpus", type=int, default=1, help="also run strategy all on N GPUs")
    sub.choices["suite"].add_argument("--stock-five", action="store_true",
                                      help="stock: five RunModels in one process, as AlphaFold runs them")
    sub.choices["memory"].add_argument("--lengths", required=True)
    sub.choices["compare"].add_argument("--lengths", required=True)
    sub.choices["ceilings"].add_argument("--matmul-n", type=int, default=8192)
    sub.choices["flops"].add_argument("--lengths", required=True)
    sub.choices["ceilings"].add_argument("--copy-mib", type=int, default=2048)
    args = p.parse_args()
    commands = {"one": one, "suite": suite, "memory": memory, "ceilings": ceilings, "prepare": prepare,
                "compare": compare, "flops": flops}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
