"""Peak memory of one record's prediction, as a GPU slot's process makes it: measured, and as af2jobs.memory
estimates it before the record runs.

Each prediction runs in a fresh process (the prediction process of `af2 serve`, an AWS GPU job): the whole
process's peak resident memory (VmHWM) on a CPU, and the device's peak bytes in use on a GPU, are what must fit.
Inputs are synthetic: a random query of length L with a random MSA of `depth` rows (bench/gpu_inference.py's),
untrained parameters of the official shapes.

    python bench/memory.py sweep --profile tiny --lengths 64,256,512 --depth 300 --out DIR
    python bench/memory.py one --profile full --length 300 --depth 300 --json r.json

The sweep writes DIR/memory.json: per length the measured peaks, XLA's compiled memory analysis of the model's
apply, and af2jobs.memory's estimate, with the ratio estimate / measured (the estimate must not be below 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), in bytes."""
    from af2jobs.memory import proc_bytes

    return proc_bytes("/proc/self/status", "VmHWM")


def one(args: argparse.Namespace) -> int:
    import jax

    from af2jobs import memory
    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline import predict
    from af2jobs.pipeline.compiled import Compiled, enable_compilation_cache
    from af2jobs.pipeline.devices import on_gpu
    from af2jobs.pipeline.inputs import run_for
    from af2jobs.runconfig import resolve
    from af2jobs.settings import Settings
    from gpu_inference import synthetic_features

    t0 = time.perf_counter()
    cache = Path(args.cache)
    enable_compilation_cache(cache / "jax")
    settings = Settings(data_dir=cache / "data")
    run = resolve(settings, gpu=on_gpu(), profile=args.profile, strategy=args.strategy,
                  model_names=args.models, num_recycle=args.recycles)
    raw = synthetic_features(args.length, args.depth, args.length)
    provider = params_mod.ParamsProvider(cache / "no-official", cache / "params")
    prediction = predict.Predictor(run, provider).predict(raw)
    device = jax.devices()[0]
    analysis = {}
    for entry in Compiled._cache.values():
        m = entry.compiled.memory_analysis()
        if m is not None:
            total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
            analysis[entry.runner.config.model.global_config.get("subbatch_size", "")] = total
    stats = device.memory_stats() or {}
    fitted = run_for(run, raw)
    record = {
        "profile": args.profile, "length": args.length, "depth": args.depth, "backend": device.platform,
        "device": getattr(device, "device_kind", ""), "models": args.models, "strategy": args.strategy,
        "caps": [fitted.max_msa_clusters, fitted.max_extra_msa], "length_buckets": run.length_buckets,
        "peak_rss_bytes": peak_rss_bytes(), "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "device_limit_bytes": stats.get("bytes_limit"), "compiled_bytes": max(analysis.values(), default=None),
        "estimate_bytes": memory.prediction_bytes(args.length, run, device.platform, depth=args.depth),
        "seconds": round(time.perf_counter() - t0, 1),
        "best": prediction.ranked[0].model,
    }
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record), flush=True)
    return 0


def sweep(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        path = out / f"{args.profile}_{length}_{args.depth}.json"
        cmd = [sys.executable, __file__, "one", "--profile", args.profile, "--length", str(length), "--depth",
               str(args.depth), "--models", args.models, "--strategy", args.strategy, "--cache", args.cache,
               "--recycles", str(args.recycles), "--json", str(path)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            rows.append({"profile": args.profile, "length": length, "error": result.stderr[-500:]})
            continue
        row = json.loads(path.read_text())
        measured = row["device_peak_bytes"] if row["backend"] == "gpu" else row["peak_rss_bytes"]
        row["ratio"] = round(row["estimate_bytes"] / measured, 3)
        rows.append(row)
        print(f"L={length:5d} measured {measured / 2**30:6.2f} GiB  estimate {row['estimate_bytes'] / 2**30:6.2f} GiB"
              f"  ratio {row['ratio']:.2f}  ({row['seconds']} s)", flush=True)
        (out / "memory.json").write_text(json.dumps(rows, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("one", "sweep"):
        p = sub.add_parser(name)
        p.add_argument("--profile", choices=["full", "tiny"], default="tiny")
        p.add_argument("--depth", type=int, default=300)
        p.add_argument("--models", default="model_1,model_2,model_3,model_4,model_5")
        p.add_argument("--strategy", default="best")
        p.add_argument("--recycles", type=int, default=3, help="recycling iterations (the peak is the first's)")
        p.add_argument("--cache", default=os.environ.get("AF2_BENCH_CACHE", "/tmp/af2-bench-cache"))
        if name == "one":
            p.add_argument("--length", type=int, required=True)
            p.add_argument("--json", required=True)
        else:
            p.add_argument("--lengths", required=True)
            p.add_argument("--out", required=True)
            p.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args()
    return {"one": one, "sweep": sweep}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
