"""Structures per GPU-day: a many-record job's GPU stage, run as the GPU job runs it, on the MSA stage's work.

    python bench/throughput.py msa --count 100 --min-length 250 --max-length 350 --work DIR   # CPU: the MSA stage
    python bench/throughput.py prepare --work DIR --cache CACHE --processes 16                # CPU, not GPU time
    python bench/throughput.py gpu --work DIR --cache CACHE --out OUT.json                    # the GPU job

msa: real UniProt sequences from the demo database's FASTA (the first COUNT distinct ones in the length range),
each through af2jobs' MSA stage against the demo database (jackhmmer of UniRef90, MGnify and BFD, HHsearch of
pdb70) into DIR/<slug>/ (msas/, features.pkl), as the MSA job leaves a record; the job's run is the GPU job's
(strategy best, caps 512:5120 fitted to each MSA, length buckets). Made once, on any machine; DIR then travels.

prepare: what the CPU side does before the GPU job starts: the untrained parameters of the five models written
once (they stand for the official files on the shared file system) and each record's processed features
(inputs/, as the MSA job prepares them for its GPU job), in a process pool on the CPUs. Timed, not GPU time.

gpu: one process, as the GPU Batch job: jobrun.run_predict_records over the records with the real stages
(prediction, relax of the best model with OpenMM, structures, report), one record's relax and outputs overlapping
the next one's prediction. Its wall time from the process' start (imports, CUDA, parameters, compiles or loading
compiled executables from CACHE, every record) is the GPU time; structures per GPU-day = 86,400 x records / that.
Run it twice on one CACHE: the first pays every compile (a new deployment), the second loads them (every job
after). `--relax none` measures the predictions alone.
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
DEMO_FASTA = Path.home() / ".local/share/af2jobs/databases/uniprot/uniprot.fasta"


def _run(profile: str, strategy: str = "best", relax: str = "best"):
    """The GPU job's run: the data part (what the inputs depend on) is the same whatever strategy and relax."""
    from af2jobs.runconfig import RunConfig

    return RunConfig(strategy=strategy, models_to_relax=relax, length_buckets=True, max_msa_clusters=512,
                     max_extra_msa=5120, profile=profile)


def _records(work: Path):
    from af2jobs.fasta import parse_fasta

    return parse_fasta((work / "records.fasta").read_text(), max_length=10_000)


def _fasta(path: Path):
    """(name, sequence) of a FASTA file, as it is (the records chosen are checked by af2jobs' parser after)."""
    name, seq = None, []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if name is not None:
                yield name, "".join(seq)
            name, seq = line[1:].split()[0], []
        elif line.strip():
            seq.append(line.strip())
    if name is not None:
        yield name, "".join(seq)


def msa(args) -> int:
    from af2jobs import jobrun
    from af2jobs.pipeline.context import Context
    from af2jobs.settings import Settings

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    standard = set("ACDEFGHIKLMNPQRSTVWY")
    seen, chosen = set(), []
    for name, seq in _fasta(Path(args.fasta)):
        if args.min_length <= len(seq) <= args.max_length and seq not in seen and set(seq) <= standard:
            seen.add(seq)
            chosen.append((name, seq))
        if len(chosen) == args.count:
            break
    (work / "records.fasta").write_text("".join(f">{name}\n{seq}\n" for name, seq in chosen))
    settings = Settings(data_dir=work / ".data", db_root=Settings().database_root, cpus=args.cpus, msa_cache=False)
    run = _run(args.profile)
    prepared = jobrun.Prepared(run, "full_dbs", context=Context(settings=settings, run=run))
    rows = []
    for record in _records(work):
        t0 = time.perf_counter()
        timings = jobrun.run_msa_record(jobrun.PipelineStages(settings), record, work / record.slug, prepared)
        rows.append({"record": record.name, "length": len(record.sequence), "seconds": round(time.perf_counter() - t0, 2),
                     "msa_rows": timings["features"]["msa_rows"]})
        print(json.dumps(rows[-1]), flush=True)
    (work / "msa.json").write_text(json.dumps(rows, indent=1))
    return 0


def _prepare_one(item: tuple[str, str, str]) -> float:
    import pickle

    from af2jobs.pipeline import inputs

    work, slug, profile = Path(item[0]), item[1], item[2]
    raw = pickle.loads((work / slug / "features.pkl").read_bytes())
    t0 = time.perf_counter()
    inputs.prepare_inputs(_run(profile), raw, work / slug / "inputs")
    return time.perf_counter() - t0


def prepare(args) -> int:
    """Parameters once; each record's inputs in a pool of CPU processes (JAX on the CPU there)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    os.environ["JAX_PLATFORMS"] = "cpu"  # before JAX is imported, here and in the pool's processes
    from af2jobs.pipeline import params as params_mod

    t0 = time.perf_counter()
    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    for i in range(1, 6):
        provider.get(f"model_{i}_ptm", args.profile)
    params_s = time.perf_counter() - t0
    work = Path(args.work)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds = list(pool.map(_prepare_one, [(str(work), r.slug, args.profile) for r in _records(work)]))
    out = {"params_s": round(params_s, 1), "inputs_wall_s": round(time.perf_counter() - t0, 1),
           "inputs_cpu_s_per_record": round(sum(seconds) / len(seconds), 2), "processes": args.processes}
    print(json.dumps(out))
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


def gpu(args) -> int:
    from af2jobs import jobrun
    from af2jobs.pipeline import params as params_mod
    from af2jobs.pipeline.context import Context
    from af2jobs.settings import Settings

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(args.cache) / "jax"))
    work = Path(args.work)
    records = _records(work)[: args.limit or None]
    settings = Settings(data_dir=work / ".data", db_root=work / ".no-databases")
    run = _run(args.profile, args.strategy, args.relax)
    provider = params_mod.ParamsProvider(Path(args.cache) / "no-official", Path(args.cache) / "params")
    ctx = Context(settings=settings, run=run, provider=provider, databases=[])
    prepared = jobrun.Prepared(run, "full_dbs", context=ctx)
    for record in records:  # a record run before (the cold pass) is predicted again
        (work / record.slug / jobrun.PREDICT_DONE).unlink(missing_ok=True)
    ready_s = time.perf_counter() - START
    summaries = jobrun.run_predict_records(jobrun.PipelineStages(settings), records, lambda r: work / r.slug,
                                           prepared)
    wall = time.perf_counter() - START
    rows = []
    for record in records:
        timings = json.loads((work / record.slug / "timings.json").read_text())
        models = timings["predict"]["models"]
        rows.append({"record": record.name, "length": len(record.sequence), "msa_caps": timings["predict"]["msa_caps"],
                     "predict_s": timings["predict"]["seconds"], "compile_s": round(sum(m["compile_s"] for m in models), 2),
                     "relax_s": timings["relax"]["seconds"], "outputs_s": timings["outputs"]["seconds"],
                     "inputs_used": len(timings["predict"]["inputs_used"])})
    import jax

    out = {"records": len(records), "strategy": args.strategy, "relax": args.relax, "device": jax.devices()[0].device_kind,
           "process_s": round(wall, 1), "start_up_s": round(ready_s, 1),
           "predict_s": round(sum(r["predict_s"] for r in rows), 1),
           "compile_s": round(sum(r["compile_s"] for r in rows), 1),
           "relax_s": round(sum(r["relax_s"] for r in rows), 1),
           "structures_per_gpu_day": round(86400 * len(records) / wall),
           "summaries": len(summaries),
           "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("msa")
    m.add_argument("--count", type=int, default=100)
    m.add_argument("--min-length", type=int, default=250)
    m.add_argument("--max-length", type=int, default=350)
    m.add_argument("--fasta", default=str(DEMO_FASTA))
    m.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    m.add_argument("--work", required=True)
    pr = sub.add_parser("prepare")
    pr.add_argument("--work", required=True)
    pr.add_argument("--cache", required=True)
    pr.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    pr.add_argument("--out", default="prepare.json")
    g = sub.add_parser("gpu")
    g.add_argument("--work", required=True)
    g.add_argument("--cache", required=True)
    g.add_argument("--strategy", default="best")
    g.add_argument("--relax", default="best", choices=["best", "all", "none"])
    g.add_argument("--limit", type=int, default=0, help="the first N records only")
    g.add_argument("--out", required=True)
    for s in (m, pr, g):
        s.add_argument("--profile", default="full", choices=["full", "tiny"], help="tiny: a check on a CPU")
    args = p.parse_args()
    return {"msa": msa, "prepare": prepare, "gpu": gpu}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
