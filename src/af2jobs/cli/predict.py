"""`af2 predict INPUT.fasta --out DIR`: a local prediction, end to end."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from af2jobs import admission, atomic, jobrun, msafile
from af2jobs.cli import requestflags
from af2jobs.errors import ConflictError, ValidationError
from af2jobs.models import Job, JobState
from af2jobs.request import JobRequest
from af2jobs.settings import Settings, apply_device_memory

MAX_INPUT_BYTES = 10 << 20  # far above any FASTA of sequences within the length limit
OWNER = "af2-predict"  # the owner of the job af2 predict runs (never stored)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict structures for a FASTA file on this machine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("input", nargs="?", type=Path, help="FASTA file (several records: each is its own prediction; "
                                                         "with --model-preset multimer, one complex)")
    src.add_argument("--example", choices=["ubiquitin", "yeast_ubiquitin"],
                     help="predict a bundled example instead of a file (yeast_ubiquitin has a template in the demo "
                          "database: human ubiquitin, 1UBQ)")
    p.add_argument("--out", type=Path, required=True, help="output directory (one subdirectory per record)")
    requestflags.add(p, "predict")
    p.add_argument("--recycles", type=int, help="recycling iterations (default: AF2_NUM_RECYCLE or 3)")
    p.add_argument("--max-msa", help="MSA depth caps CLUSTERS:EXTRA (default 512:5120 on a GPU, 64:128 on a CPU)")
    p.add_argument("--profile", choices=["full", "tiny"], default="full",
                   help="'tiny' runs a 1-block model for smoke tests; default: the published architecture")
    p.add_argument("--db-root", type=Path, help="database root (default: AF2_DB_ROOT or DATA_DIR/databases)")
    p.add_argument("--params-dir", type=Path, help="directory with official params_model_*.npz")
    p.add_argument("--seed", type=int, default=0, help="random seed of the model")
    p.add_argument("--msa", action="append", default=[], metavar="[NAME=]FILE",
                   help="your own MSA (A3M or Stockholm, the query first) for a record: its search is skipped; "
                        "repeat with NAME=FILE for several records")
    p.set_defaults(func=run)


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


def _request(args, file_name: str, msa: dict[str, str] | None = None) -> JobRequest:
    """The run as a JobRequest: the one schema the API checks too, with af2 submit's flags and defaults, so that the
    same choices get the same answer and the same run."""
    fields = {"fasta": requestflags.job_name(Path(file_name)), "file_name": file_name,
              **requestflags.fields(args), "msa": msa}
    return requestflags.parse({k: v for k, v in fields.items() if v is not None}, {"file_name": "input"})


def _supplied_msas(request: JobRequest, records) -> dict[str, tuple[str, bytes]]:
    """The request's own MSAs, each checked against its record (as the API checks them): slug -> (format, text)."""
    return {record.slug: (msa.format, msa.text.encode()) for record, msa in request.own_msas(records)}


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


def _overrides(args) -> dict:
    """What af2 predict sets beyond the request: RunConfig fields over the request's run."""
    clusters, extra = _caps(args.max_msa)
    overrides = {"num_recycle": args.recycles, "max_msa_clusters": clusters, "max_extra_msa": extra,
                 "profile": args.profile, "random_seed": args.seed}
    return {k: v for k, v in overrides.items() if v is not None}


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
    stages = jobrun.PipelineStages(settings, _overrides(args))
    # The run as a job that is never stored: the request as the service stores it (its MSAs apart).
    job = Job(owner=OWNER, request=request.model_copy(update={"msa": None}), state=JobState.VALIDATING)
    # The run, resolved as a job's for this machine's device; every database its searches need is installed and
    # its parameters may be used: prepare checks, before any file is written.
    prepared = stages.prepare(job, records, supplied, progress=lambda *event: None, should_cancel=lambda: False)
    run_config = prepared.run_config
    check_devices(run_config.gpus)
    check_memory(records, run_config, settings)

    from af2jobs.cli.progress import StageReporter

    console = Console() if Console().is_terminal else Console(width=200)
    with output_dir(args.out), StageReporter() as reporter:
        prepared.context.progress = reporter
        results = _predict(stages, prepared, records, args.out, reporter)
    _summary(console, results, run_config)
    return 0


def _predict(stages: jobrun.PipelineStages, prepared: jobrun.Prepared, records, out: Path, reporter) -> list[tuple]:
    """The records through jobrun's record functions, as a job's: every MSA, then the predictions (one record's
    relax, structures and report while the next is predicted), each record's work in a hidden folder beside its
    place (out/.tmp-<slug>-work) whose results become out/<slug> once it is finished; predictions.json last.
    (record, summary, timings, its folder) for each record."""

    def workdir(record) -> Path:
        return out / f"{atomic.TMP_PREFIX}{record.slug}-work"

    def start(index: int, record) -> None:
        reporter("record", "start", {"name": record.name, "index": index, "total": len(records),
                                     "length": len(record.sequence)})

    results: dict[str, tuple] = {}

    def finished(record, summary: dict) -> None:
        (workdir(record) / "input.fasta").write_text(f">{record.name} {record.description}".rstrip()
                                                     + f"\n{record.sequence}\n")
        timings = json.loads((workdir(record) / "timings.json").read_text())
        results[record.slug] = (record, summary, timings, jobrun.publish_dir(workdir(record), out / record.slug))

    try:
        for index, record in enumerate(records, 1):
            start(index, record)
            jobrun.run_msa_record(stages, record, workdir(record), prepared)
        summaries = jobrun.run_predict_records(stages, records, workdir, prepared, start, finished)
    finally:
        for record in records:  # what a failure or an interrupt left unfinished
            shutil.rmtree(workdir(record), ignore_errors=True)
    atomic.write_json(out / "predictions.json", {**jobrun.prediction_mode(records), "records": summaries})
    return [results[r.slug] for r in records]


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
    from af2jobs.pipeline.devices import memory_capacity

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
    for record, best, timings, folder in results:
        models = timings["predict"]["models"]
        used = timings.get("templates", {}).get("used", [])
        relaxed = [m + (f" (moved {info['rmsd']:.1f} A!)" if info.get("warning") else "")
                   for m, info in timings.get("relax", {}).get("models", {}).items() if info.get("error") is None]
        table.add_row(
            record.name, str(len(record.sequence)), best["best_model"], f"{best['mean_plddt']:.1f}",
            ("-" if best["ptm"] is None else f"{best['ptm']:.3f}")
            + (f" (ipTM {best['iptm']:.3f})" if best.get("iptm") is not None else ""),
            f"{depth_line(timings['msa_depth'])} ({timings['msa']['cache']})",
            ", ".join(used[:2]) + (f" +{len(used) - 2}" if len(used) > 2 else "")
            or "none", ", ".join(relaxed) or "none", f"{sum(m['compile_s'] for m in models):.1f}",
            f"{sum(m['run_s'] for m in models):.1f}", f"{timings['total_s']:.1f}", str(folder),
        )
    console.print(table)
    if any(summary["untrained"] for _, summary, _, _ in results):
        console.print("[bold yellow]UNTRAINED PARAMETERS[/]: no official params_model_*.npz were found, so the "
                      "model ran on deterministic random weights of the official shapes. The structures and "
                      "scores above carry no biological meaning. Put the official parameters in "
                      "AF2_PARAMS_DIR for real predictions.")
