"""`af2 predict INPUT.fasta --out DIR`: a local prediction, end to end."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import signal
import threading
from datetime import date
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from af2jobs import admission, atomic, msafile
from af2jobs.errors import ConflictError, ValidationError
from af2jobs.request import DB_PRESETS, MSA_MODES, MODEL_PRESETS, RELAX, JobRequest
from af2jobs.runconfig import MODEL_NAMES
from af2jobs.settings import Settings, apply_device_memory

MAX_INPUT_BYTES = 10 << 20  # far above any FASTA of sequences within the length limit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict structures for a FASTA file on this machine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("input", nargs="?", type=Path, help="FASTA file (several records: each is its own prediction; "
                                                         "with --model-preset multimer, one complex)")
    src.add_argument("--example", choices=["ubiquitin", "yeast_ubiquitin"],
                     help="predict a bundled example instead of a file (yeast_ubiquitin has a template in the demo "
                          "database: human ubiquitin, 1UBQ)")
    p.add_argument("--out", type=Path, required=True, help="output directory (one subdirectory per record)")
    p.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated subset of model_1..model_5")
    p.add_argument("--strategy", default="all", help="all | best | stop-at-score:X (default: all)")
    p.add_argument("--recycles", type=int, help="recycling iterations (default: AF2_NUM_RECYCLE or 3)")
    p.add_argument("--max-msa", help="MSA depth caps CLUSTERS:EXTRA (default 512:5120 on a GPU, 64:128 on a CPU)")
    p.add_argument("--profile", choices=["full", "tiny"], default="full",
                   help="'tiny' runs a 1-block model for smoke tests; default: the published architecture")
    p.add_argument("--db-root", type=Path, help="database root (default: AF2_DB_ROOT or DATA_DIR/databases)")
    p.add_argument("--params-dir", type=Path, help="directory with official params_model_*.npz")
    p.add_argument("--seed", type=int, default=0, help="random seed of the model")
    p.add_argument("--db-preset", type=str.lower, choices=DB_PRESETS,
                   help="full_dbs (default): BFD + UniRef30 by HHblits; reduced_dbs: small BFD by jackhmmer")
    p.add_argument("--msa-mode", type=str.lower, choices=MSA_MODES,
                   help="jackhmmer (default): AlphaFold's searches; mmseqs2: MMseqs2, as ColabFold searches")
    p.add_argument("--model-preset", type=str.lower, choices=MODEL_PRESETS,
                   help="monomer_ptm (default) | monomer | monomer_casp14 (8 ensembles) | multimer (the records are "
                        "the chains of one complex: AlphaFold-Multimer v3)")
    p.add_argument("--num-multimer-predictions-per-model", type=int, metavar="N",
                   help="with --model-preset multimer: seeds per model (default 5: 25 predictions)")
    p.add_argument("--name", help="with --model-preset multimer: the complex's name (default: the input file's)")
    p.add_argument("--models-to-relax", type=str.lower, choices=RELAX,
                   help="Amber relaxation: best (default, the top-ranked model) | all | none")
    p.add_argument("--max-template-date", type=_iso_date, metavar="YYYY-MM-DD",
                   help="use only templates released by this date (default: no limit; jobs submitted through the "
                        "API default to the original platform's 2020-05-14)")
    p.add_argument("--msa", action="append", default=[], metavar="[NAME=]FILE",
                   help="your own MSA (A3M or Stockholm, the query first) for a record: its search is skipped; "
                        "repeat with NAME=FILE for several records")
    p.add_argument("--gpus", type=int, help="devices to use: with --strategy all, models run on separate GPUs in "
                                            "parallel (default 1)")
    p.set_defaults(func=run)


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _read_input(args) -> tuple[str, bytes]:
    """The input's file name and bytes."""
    if args.example:
        name = f"{args.example}.fasta"
        return name, resources.files("af2jobs.examples").joinpath(name).read_bytes()
    path: Path = args.input
    if not path.is_file():
        raise ValidationError(f"input file {path} does not exist or is not a file", field="input")
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise ValidationError(f"input file {path} is {path.stat().st_size:,} bytes; the limit is "
                              f"{MAX_INPUT_BYTES:,}", field="input")
    return path.name, path.read_bytes()


def _job_name(text: str) -> str:
    """A job name (the request's `fasta`: a complex's name) from a file name: 'my seq (1).fa' -> 'my_seq__1_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(text).stem).lstrip("._-")[:100]
    return name or "job"


# The command line's flag for each request field, to name it in an error.
FLAGS = {"fasta": "--name", "model_names": "--models", "strategy": "--strategy", "db_preset": "--db-preset",
         "msa_mode": "--msa-mode", "model_preset": "--model-preset", "models_to_relax": "--models-to-relax",
         "num_multimer_predictions_per_model": "--num-multimer-predictions-per-model", "gpu": "--gpus",
         "max_template_date": "--max-template-date", "msa": "--msa", "file_name": "input"}


def _request(args, file_name: str, msa: dict[str, str] | None = None) -> JobRequest:
    """The run as a JobRequest: the one schema the API checks too, so that the same choices get the same answer
    (af2 predict's own default for max_template_date: no limit, today)."""
    fields = {
        "fasta": args.name or _job_name(file_name), "file_name": file_name, "model_names": args.models,
        "strategy": args.strategy, "db_preset": args.db_preset, "msa_mode": args.msa_mode,
        "model_preset": args.model_preset, "models_to_relax": args.models_to_relax,
        "num_multimer_predictions_per_model": args.num_multimer_predictions_per_model, "gpu": args.gpus,
        "max_template_date": args.max_template_date or date.today(), "msa": msa,
    }
    try:
        return JobRequest.parse({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        flag = FLAGS.get((exc.field or "").split(".")[0])
        raise ValidationError(f"{flag}: {exc.message}" if flag else exc.message, field=exc.field) from None


def _supplied_msas(request: JobRequest, records) -> dict[str, tuple[str, bytes]]:
    """The request's own MSAs, each checked against its record (as the API checks them): name -> (format, text)."""
    return {record.name: (msa.format, msa.text.encode()) for record, msa in request.own_msas(records)}


def _msa_texts(values: list[str], records) -> dict[str, str] | None:
    """--msa files as record name -> text."""
    texts = {}
    for name, path in msafile.assign(values, [r.name for r in records]).items():
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"--msa {path}: not UTF-8 text", field="msa") from None
    return texts or None


def _caps(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    try:
        clusters, extra = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValidationError(f"--max-msa must look like 512:5120, not {text!r}", field="max_msa") from None
    return clusters, extra


def _run_config(args, request: JobRequest, settings: Settings):
    from af2jobs.jobrun import run_config_for

    clusters, extra = _caps(args.max_msa)
    overrides = {"num_recycle": args.recycles, "max_msa_clusters": clusters, "max_extra_msa": extra,
                 "profile": args.profile, "random_seed": args.seed}
    return run_config_for(request, settings, {k: v for k, v in overrides.items() if v is not None})[0]


def run(args) -> int:
    overrides = {k: v for k, v in {"db_root": args.db_root, "params_dir": args.params_dir}.items() if v}
    settings = Settings(**overrides)
    apply_device_memory(settings)
    # Validate everything before any work or any file: bad input leaves nothing behind.
    file_name, data = _read_input(args)
    request = _request(args, file_name)
    records = request.records(data, max_length=settings.max_length)
    admission.check_size(request, records, settings)
    if args.msa:
        request = _request(args, file_name, _msa_texts(args.msa, request.parse_sequence(
            data, name=request.fasta, max_length=settings.max_length)))
    supplied = _supplied_msas(request, records)
    run_config = _run_config(args, request, settings)
    check_devices(run_config.gpus)

    from af2jobs.cli.progress import StageReporter
    from af2jobs.pipeline.run import Context, check_databases, predict_records

    console = Console() if Console().is_terminal else Console(width=200)
    ctx = Context(settings=settings, run=run_config, supplied_msas=supplied)
    check_databases(records, ctx)  # every database the search needs is installed, before any file is written
    check_memory(records, run_config, settings)
    with output_dir(args.out), StageReporter() as reporter:
        ctx.progress = reporter
        results = predict_records(records, args.out, ctx)
    _summary(console, results, run_config)
    return 0


@contextlib.contextmanager
def output_dir(out: Path):
    """The output folder, this command's alone while it runs: a second af2 predict into it is refused, what an
    earlier one left half-written (its staging folders and temporary files, named atomic.TMP_PREFIX) is removed,
    and SIGTERM ends the run as Ctrl-C does, so that this run's own staging folders go too."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"another af2 predict is writing to {out}: wait for it, or use another --out") \
                from None
        for leftover in out.glob(f"{atomic.TMP_PREFIX}*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        main = threading.current_thread() is threading.main_thread()  # only there can a handler be set
        previous = signal.signal(signal.SIGTERM, _interrupted) if main else None
        try:
            yield out
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
    finally:
        os.close(fd)  # releases the lock


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def check_memory(records, run_config, settings: Settings) -> None:
    """A record whose prediction is estimated to need more memory than this machine has is refused before any work
    (af2jobs.admission), as `af2 serve` fails it before its MSA."""
    from af2jobs.memory import Capacity
    from af2jobs.pipeline.predict import memory_capacity

    capacity = Capacity.of(*memory_capacity(), settings.prediction_memory_gb)
    admission.check_memory(records, run_config, capacity)


def check_devices(gpus: int) -> None:
    """--gpus N asks this machine for N devices: refused when JAX sees fewer."""
    if gpus <= 1:
        return
    import jax

    seen = jax.devices()
    if len(seen) < gpus:
        raise ValidationError(f"--gpus {gpus}: JAX sees {len(seen)} device(s) on this machine "
                              f"({', '.join(sorted({d.platform for d in seen}))}); use --gpus {len(seen)} or fewer",
                              field="gpus")


def _summary(console: Console, results, run_config) -> None:
    from af2jobs.pipeline.features import depth_line

    kind = "complex" if run_config.multimer else "monomer prediction(s)"
    table = Table(title=f"af2 predict: {len(results)} {kind}, strategy {run_config.strategy}")
    for col in ("record", "length", "best model", "mean pLDDT", "pTM", "MSA", "templates", "relaxed", "compile s",
                "predict s", "total s", "output"):
        table.add_column(col)
    for r in results:
        msa = r.timings["msa"]
        models = r.timings["predict"]["models"]
        used = r.timings.get("templates", {}).get("used", [])
        relaxed = [m + (f" (moved {info['rmsd']:.1f} A!)" if info.get("warning") else "")
                   for m, info in r.timings.get("relax", {}).get("models", {}).items() if info.get("error") is None]
        table.add_row(
            r.record.name, str(len(r.record.sequence)), r.best["model"], f"{r.best['mean_plddt']:.1f}",
            ("-" if r.best["ptm"] is None else f"{r.best['ptm']:.3f}")
            + (f" (ipTM {r.best['iptm']:.3f})" if r.best.get("iptm") is not None else ""),
            f"{depth_line(r.timings['msa_depth'])} ({msa['cache']})",
            ", ".join(used[:2]) + (f" +{len(used) - 2}" if len(used) > 2 else "")
            or "none", ", ".join(relaxed) or "none", f"{sum(m['compile_s'] for m in models):.1f}",
            f"{sum(m['run_s'] for m in models):.1f}", f"{r.timings['total_s']:.1f}", str(r.out_dir),
        )
    console.print(table)
    if any(r.untrained for r in results):
        console.print("[bold yellow]UNTRAINED PARAMETERS[/]: no official params_model_*.npz were found, so the "
                      "model ran on deterministic random weights of the official shapes. The structures and "
                      "scores above carry no biological meaning. Put the official parameters in "
                      "AF2_PARAMS_DIR for real predictions.")
