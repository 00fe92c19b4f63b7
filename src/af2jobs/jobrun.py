"""A job's MSA and predict stages, record by record, against any JobRepository + ArtifactStore: what the local
Worker (adapters/local/worker.py) and the Batch stages (af2jobs.awsrun.stage) share.

    read_records        the job's input (jobs/<id>/input.fasta) as FASTA records
    run_config_for      the job's RunConfig: the request, then the runner's overrides, then the preset
    StageRunner         the pipeline's side of the stages: PipelineStages runs the real one (JAX, AlphaFold);
                        tests pass a fake, so the lifecycle around it runs without JAX
    run_msa_record      the MSA stage of one record in its work dir; skipped when a finished MSA is there
    run_predict_records the predict stage of a job's records (a finished prediction is not run again), one's
                        CPU half overlapping the next's GPU half
    overlapped          that schedule for any steps: a GPU step in order, the CPU steps in a thread beside it
    publish             the records' results to jobs/<id>/output/<slug>/ and jobs/<id>/output/predictions.json
    publish_dir         one record's results to a folder of its own (af2 predict's --out/<slug>/)

Every entry runs records through these functions: the local Worker and the Batch stages for jobs, `af2 predict`
for a FASTA on this machine (af2jobs.cli.predict, a job that is never stored).

One work dir per record holds the pipeline's file contract (msas/, features.pkl, timings.json, then the
structures). The pipeline writes features.pkl and timings.json in place, so their presence proves nothing; the
markers MSA_DONE and PREDICT_DONE, written once a stage returned, tell finished work from work cut short.

Presets are AlphaFold 2.3's, and part of the RunConfig: db_preset (full_dbs | reduced_dbs) picks the MSA's
databases, model_preset (monomer_ptm | monomer | monomer_casp14) the parameters and the ensembles; the original
platform's 2021 spelling (full | reduced | casp14) maps onto these (af2jobs.request.PRESETS).

The pipeline (JAX) is imported inside PipelineStages' methods: importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydantic

from af2jobs import atomic, errors, layout
from af2jobs.fasta import CHAIN_IDS, FastaRecord
from af2jobs.msafile import SUPPLIED_MSA
from af2jobs.models import Job, JobState
from af2jobs.request import JobRequest
from af2jobs.ports import ArtifactStore
from af2jobs.runconfig import RunConfig
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

MSA_DONE = ".af2-msa-done.json"
PREDICT_DONE = ".af2-predict-done.json"
OUTPUT_FILES = (
    "ranked_*.pdb", "ranked_*.cif", "unrelaxed_*.pdb", "unrelaxed_*.cif", "relaxed_*.pdb", "relaxed_*.cif",
    "ranking_debug.json", "timings.json", "versions.json",
    "confidence_*_full.json", "*_predicted_aligned_error_v1.json", "features.pkl", "report.html", "*.png",
)
OUTPUT_DIRS = ("msas",)
# What a prediction writes into its working directory; cleared before a prediction runs again.
PREDICT_WRITES = ("ranked_*", "unrelaxed_*", "relaxed_*", "confidence_*", "*_predicted_aligned_error_v1.json", "ranking_debug.json",
                  "versions.json", "report.html", "*.png")
CASP14_NOTE = (
    "model_preset monomer_casp14: AlphaFold's CASP14 configuration, the original (non-pTM) models averaging 8 "
    "ensembles of the input features per recycle"
)
MULTIMER_NOTE = (
    "model_preset multimer: the FASTA's records predicted as one complex with AlphaFold-Multimer v3, {seeds} "
    "seed(s) per model ({total} predictions), ranked by 0.8 ipTM + 0.2 pTM"
)
Progress = Callable[[str, str, Mapping[str, Any]], None]  # (stage, event, details), as the pipeline reports


# ---------------------------------------------------------------------------------------------------------------
# Inputs and configuration


def read_records(store: ArtifactStore, job: Job, max_length: int) -> list[FastaRecord]:
    """The job's records, from the canonical FASTA the service stored at submit (FastaError if it is bad)."""
    data = store.get_bytes(layout.input_key(job.id))
    return job.request.records(data, max_length=max_length)


def run_config_for(
    request: JobRequest, settings: Settings, overrides: Mapping[str, Any] | None = None, *, gpu: bool,
) -> tuple[RunConfig, list[str]]:
    """The run configuration of a request (request, then overrides, then the preset) for a GPU (gpu True) or a CPU,
    and the notes its versions.json carries: the one mapping from a request to a run, for jobs and af2 predict
    alike. Asks nothing of JAX: the caller says which device the run is for."""
    from af2jobs.runconfig import resolve

    values = {"model_names": request.model_names, "strategy": request.strategy, "gpus": request.gpu,
              "db_preset": request.db_preset, "model_preset": request.model_preset, "msa_mode": request.msa_mode,
              "models_to_relax": request.models_to_relax, "max_template_date": request.max_template_date,
              "num_multimer_predictions_per_model": request.predictions_per_model, **(overrides or {})}
    try:
        config = resolve(settings, gpu=gpu, **values)
        return config, presets_notes(config)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise errors.ValidationError(f"run configuration: {where}: {errors.pydantic_message(err)}",
                                     field=where or None) from None


def check_parameters(settings: Settings, config: RunConfig) -> None:
    """Where UNTRAINED runs are not allowed (settings.allow_untrained), a StageError before any work when the
    official parameters of a model the job runs are not loaded."""
    if settings.allow_untrained or config.profile != "full":
        return
    from af2jobs.pipeline.params import official_path

    missing = [config.variant(m) for m in config.model_names if official_path(settings.params_root, config.variant(m))
               is None]
    if missing:
        raise errors.StageError(
            f"the official AlphaFold parameters are not loaded: {settings.params_root} has no "
            f"params_{missing[0]}.npz{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}. Load them "
            "(the dbload job with databases=params), or deploy with AllowUntrained=true for a smoke test on "
            "UNTRAINED parameters", stage="validating")


def presets_notes(config: RunConfig) -> list[str]:
    """What versions.json says of the presets beyond the run configuration itself."""
    if config.multimer:
        return [MULTIMER_NOTE.format(seeds=config.seeds, total=config.seeds * len(config.model_names))]
    return [CASP14_NOTE] if config.model_preset == "monomer_casp14" else []


def report_fields(request: JobRequest, records: list[FastaRecord]) -> dict[str, Any]:
    """The pipeline Context's report fields for a job: its comment, and the queue and GPU count its records'
    reports price their stages on (the queue the request resolves to for its longest record)."""
    longest = max(len(r.sequence) for r in records)
    return {"comment": request.comment, "queue": request.queue_for(longest), "gpus": request.gpu}


def prediction_mode(records: list[FastaRecord]) -> dict:
    """What predictions.json says the records are: monomers, or one complex."""
    if records and records[0].is_complex:
        return {"mode": "multimer", "note": "the FASTA's records were predicted as one complex (AlphaFold-Multimer)"}
    return {"mode": "monomer", "note": "each FASTA record was predicted as its own monomer"}


def summary_of(record: FastaRecord, best: dict, untrained: bool, msa_depth: dict | None = None) -> dict:
    """One record's line in predictions.json (and the job's results); `msa_depth` as the predict stage measured it
    (pipeline.features.depth_summary)."""
    out = {"name": record.name, "length": len(record.sequence), "dir": record.slug, "best_model": best["model"],
           "mean_plddt": best["mean_plddt"], "ptm": best["ptm"], "untrained": untrained}
    if msa_depth is not None:
        out["msa_depth"] = msa_depth
    if record.is_complex:
        out.update(iptm=best.get("iptm"), chains=[{"chain": c, "name": r.name, "length": len(r.sequence)}
                                                  for c, r in zip(CHAIN_IDS, record.chains)])
    return out


# ---------------------------------------------------------------------------------------------------------------
# The stage runner: the seam between a job's lifecycle and the pipeline


@dataclass
class Prepared:
    """A job's stages made ready to run: what versions.json says of the run, and the pipeline's context."""

    run_config: RunConfig
    preset: str
    notes: list[str] = field(default_factory=list)
    context: Any = None  # the StageRunner's own (pipeline.run.Context for PipelineStages)
    databases: list[Any] = field(default_factory=list)  # the installed databases (the MSA cache keys on them)
    supplied: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # slug -> (format, text): own MSAs
    searches_ahead: list[Any] = field(default_factory=list)  # records whose MSAs the first MSA stage searches


class StageRunner(Protocol):
    """What runs a stage of one record. The markers, restarts and publishing around it are this module's."""

    def prepare(self, job: Job, records: list[FastaRecord], supplied: Mapping[str, tuple[str, bytes]], *,
                progress: Progress, should_cancel: Callable[[], bool]) -> Prepared:
        """The job's run made ready; `supplied` (slug -> (format, text)) the MSAs its request brought, which
        Prepared.supplied keeps."""
        ...

    def msa(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> dict[str, Any]:
        """msas/ and features.pkl (and timings.json) in workdir; returns the timings."""
        ...

    def predict_begin(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> Callable[[], dict[str, Any]]:
        """The structures and their JSON beside features.pkl, in two halves: this call makes the prediction (the
        GPU's part); the call it returns does the rest (relax, structures, report: the CPUs' part) and returns
        {"timings", "best", "untrained"}."""
        ...

    def predict_warm(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> None:
        """Queues, for the background, making ready what predict_begin of this record (its MSA done) will need,
        and returns at once; a failure there is left for predict_begin to meet."""
        ...

    def capacity(self) -> tuple[str, str, int | None]:
        """What the predictions run on: (backend "cpu" | "gpu", device kind, the bytes one prediction may use, None
        where the device does not say)."""
        ...


class PipelineStages:
    """The real stages: af2jobs.pipeline (AlphaFold2's code on JAX). One per runner, so that the parameters loaded
    for one job are kept for the next."""

    def __init__(self, settings: Settings, overrides: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})  # RunConfig fields over every job's (the tiny profile in tests)
        # Whether the predictions run on a GPU (a local GPU slot's process says); None: this process's device, asked
        # of JAX when a job is prepared.
        self.for_gpu: bool | None = None
        self._provider: Any = None
        self._lock = threading.Lock()

    def _params(self) -> Any:
        from af2jobs.pipeline.params import ParamsProvider

        with self._lock:
            if self._provider is None:
                s = self.settings
                self._provider = ParamsProvider(s.params_root, s.cache_dir / "params-untrained")
            return self._provider

    def prepare(self, job: Job, records: list[FastaRecord], supplied: Mapping[str, tuple[str, bytes]], *,
                progress: Progress, should_cancel: Callable[[], bool]) -> Prepared:
        from af2jobs.pipeline.devices import on_gpu
        from af2jobs.pipeline.context import Context
        from af2jobs.pipeline.run import check_databases

        gpu = on_gpu() if self.for_gpu is None else self.for_gpu
        run_config, notes = run_config_for(job.request, self.settings, self.overrides, gpu=gpu)
        check_parameters(self.settings, run_config)
        ctx = Context(settings=self.settings, run=run_config, provider=self._params(), progress=progress,
                      should_cancel=should_cancel, **report_fields(job.request, records))
        # Who prepares the GPU's processed features in the MSA stage: on AWS the CPU MSA job, for the run of its
        # GPU job; on one machine with a GPU the CPU slot, while the GPU slot predicts another job.
        if self.settings.mode == "aws" and not run_config.length_buckets:
            ctx.inputs_run = run_config_for(job.request, self.settings, self.overrides, gpu=True)[0]
        elif self.settings.mode == "local" and run_config.length_buckets:
            ctx.inputs_run = run_config
        prepared = Prepared(run_config, job.request.preset, notes, ctx, list(ctx.databases), dict(supplied))
        searched = [r for r in records if r.slug not in supplied]  # the others brought their MSA
        if job.state is not JobState.PREDICTING:  # before the MSA: every database its searches need is installed
            check_databases(searched, ctx)
        prepared.searches_ahead = searched  # msa_mode mmseqs2: all of them in one run, at the first MSA
        return prepared

    def msa(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> dict[str, Any]:
        from af2jobs.pipeline.run import msa_stage, prefetch_msas

        if prepared.searches_ahead:
            records, prepared.searches_ahead = prepared.searches_ahead, []
            prefetch_msas(records, prepared.context)
        return msa_stage(record, workdir, prepared.context)

    def predict_begin(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> Callable[[], dict[str, Any]]:
        from af2jobs.pipeline.run import predict_begin

        return predict_begin(record, workdir, prepared.context)

    def predict_warm(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> None:
        from af2jobs.pipeline.run import predict_warm

        predict_warm(record, workdir, prepared.context)

    def capacity(self) -> tuple[str, str, int | None]:
        from af2jobs.pipeline.devices import memory_capacity

        return memory_capacity()


def _supplied(job: Job) -> dict[str, tuple[str, str]]:
    """The MSAs the request brought, as the service stored them (the record keeps none): slug -> (format, key)."""
    prefix = f"{layout.SUPPLIED}/"
    out = {}
    for name, key in job.artifacts.items():
        if name.startswith(prefix):
            slug, _, fmt = name.removeprefix(prefix).rpartition(".")
            out[slug] = (fmt, key)
    return out


def prepare(stages: StageRunner, store: ArtifactStore, job: Job, records: list[FastaRecord], *,
            progress: Progress, should_cancel: Callable[[], bool]) -> Prepared:
    """The stored job's stages made ready by `stages`, with the MSAs its request brought (read from the store)."""
    supplied = {slug: (fmt, store.get_bytes(key)) for slug, (fmt, key) in _supplied(job).items()}
    return stages.prepare(job, records, supplied, progress=progress, should_cancel=should_cancel)


# ---------------------------------------------------------------------------------------------------------------
# The stages, one record at a time


def output_files(workdir: Path) -> list[Path]:
    """The files of a finished record that are published (OUTPUT_FILES and OUTPUT_DIRS)."""
    files = {p for pattern in OUTPUT_FILES for p in workdir.glob(pattern) if p.is_file()}
    for name in OUTPUT_DIRS:
        files.update(p for p in (workdir / name).rglob("*") if p.is_file())
    return sorted(files)


def msa_done(workdir: Path) -> bool:
    return (workdir / MSA_DONE).is_file()


def msa_rows(workdir: Path) -> int | None:
    """The rows of a finished MSA stage's MSA (its features', de-duplicated); None before, or if not recorded."""
    try:
        timings = json.loads((workdir / MSA_DONE).read_text())["timings"]
        return int(timings["features"]["msa_rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_msa_record(stages: StageRunner, record: FastaRecord, workdir: Path, prepared: Prepared) -> dict | None:
    """The MSA stage for one record: msas/ and features.pkl in workdir. Returns its timings, or None when a
    finished MSA was already there (nothing ran)."""
    if msa_done(workdir):
        return None
    # A search cut short leaves files that must not pass for results: start this record afresh.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    if record.slug in prepared.supplied:  # the request's own MSA: the stage makes features of it, no search
        fmt, data = prepared.supplied[record.slug]
        (workdir / "msas").mkdir()
        (workdir / "msas" / f"{SUPPLIED_MSA}.{fmt}").write_bytes(data)
    timings = stages.msa(record, workdir, prepared)
    atomic.write_json(workdir / MSA_DONE, {"timings": timings, "seconds": round(time.perf_counter() - t0, 3)})
    return timings


def _msa_seconds(workdir: Path) -> float:
    """How long the record's MSA stage took (0 when a marker of an older release does not say)."""
    try:
        return float(json.loads((workdir / MSA_DONE).read_text()).get("seconds", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def _reset_predict_outputs(workdir: Path) -> None:
    """Undo a prediction cut short: remove its outputs and restore the MSA stage's timings.json."""
    for pattern in PREDICT_WRITES:
        for path in workdir.glob(pattern):
            path.unlink()
    msa = json.loads((workdir / MSA_DONE).read_text())
    atomic.write_json(workdir / "timings.json", msa["timings"])


def _annotate_versions(path: Path, prepared: Prepared) -> None:
    # versions.json is the job's record of what ran; the preset is decided here, not in the pipeline.
    versions = json.loads(path.read_text())
    versions["preset"] = prepared.preset  # the 2021 spelling, where the presets have one
    versions["notes"] = [n for n in [versions.get("note"), *prepared.notes] if n]
    atomic.write_json(path, versions)


def _predict_begin(stages: StageRunner, record: FastaRecord, workdir: Path, prepared: Prepared) -> Callable[[], dict]:
    """The predict stage for one record whose MSA is done, in two halves: the prediction now; the rest and the
    marker when the result is called, which returns the record's summary (the predictions.json entry). A finished
    prediction is not run again."""
    if (workdir / PREDICT_DONE).is_file():
        summary = json.loads((workdir / PREDICT_DONE).read_text())
        return lambda: summary
    _reset_predict_outputs(workdir)
    t0 = time.perf_counter()
    finish = stages.predict_begin(record, workdir, prepared)

    def done() -> dict:
        result = finish()
        timings_file = workdir / "timings.json"
        if timings_file.is_file():  # its MSA stage, and its predict stage from the prediction to the report
            timings = json.loads(timings_file.read_text())
            timings["total_s"] = round(_msa_seconds(workdir) + time.perf_counter() - t0, 3)
            atomic.write_json(timings_file, timings)
        _annotate_versions(workdir / "versions.json", prepared)
        summary = summary_of(record, result["best"], result["untrained"],
                             (result.get("timings") or {}).get("msa_depth"))
        atomic.write_json(workdir / PREDICT_DONE, summary)
        return summary

    return done


def _predict_warm(stages: StageRunner, record: FastaRecord, workdir: Path, prepared: Prepared) -> None:
    if (workdir / PREDICT_DONE).is_file():
        return
    try:
        stages.predict_warm(record, workdir, prepared)
    except Exception as exc:  # noqa: BLE001 - only a head start: the record's own prediction meets any failure
        log.warning("record %s: not made ready ahead (%s: %s)", record.name, type(exc).__name__, exc)


def run_predict_records(stages: StageRunner, records: list[FastaRecord], workdir_of: Callable[[FastaRecord], Path],
                        prepared: Prepared, before: Callable[[int, FastaRecord], None] = lambda i, r: None,
                        finished: Callable[[FastaRecord, dict], None] = lambda r, s: None) -> list[dict]:
    """The predict stage of each record (_predict_begin), in order: while one record's CPU half runs (relax,
    structures, report), the GPU predicts the next; the later records are made ready in the background from the
    start (stages.predict_warm: parameters, compiled applies). `before(index, record)` runs ahead of each
    prediction (1-based index), `finished(record, summary)` once the record is done (in the CPU half's thread).
    The summaries in order; on a failure or a cancel, what is in flight ends first and the error is raised
    (finished records keep their marker, so a restart does not run them again)."""

    def gpu(item: tuple[int, FastaRecord]) -> tuple[FastaRecord, Callable[[], dict]]:
        index, record = item
        before(index, record)
        return record, _predict_begin(stages, record, workdir_of(record), prepared)

    def after(begun: tuple[FastaRecord, Callable[[], dict]]) -> dict:
        record, finish = begun
        summary = finish()
        finished(record, summary)
        return summary

    for record in records[1:]:  # made ready (parameters, compiled applies) while the first ones are predicted
        _predict_warm(stages, record, workdir_of(record), prepared)

    return overlapped(list(enumerate(records, 1)), gpu, after)


def overlapped(items: list, gpu: Callable[[Any], Any], after: Callable[[Any], Any],
               cpu: Callable[[Any], Any] = lambda item: item) -> list:
    """after(gpu(cpu(item))) for each item, in order, scheduled so that the GPU does not wait for the CPUs: the
    calling thread runs the gpu steps one after another; one thread beside it runs the cpu steps (the next item's
    cpu while the GPU works on this one) and the after steps (this one's after while the GPU works on the next).
    Returns the after results in order. On an error the after steps already handed over still run to their end
    (their items' work is kept), the rest is dropped, and the error is raised; an after step's error stops the loop
    before the next gpu step."""
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu-half")
    finished: list = []
    ahead = None
    try:
        ahead = pool.submit(cpu, items[0])
        for i in range(len(items)):
            ready = ahead.result()
            ahead = pool.submit(cpu, items[i + 1]) if i + 1 < len(items) else None
            failed = next((f for f in finished if f.done() and f.exception() is not None), None)
            if failed is not None:
                raise failed.exception()
            finished.append(pool.submit(after, gpu(ready)))
    except BaseException:
        if ahead is not None:
            ahead.cancel()
        for f in finished:
            f.exception()  # wait: a record whose prediction is made is finished
        raise
    finally:
        pool.shutdown(wait=True)
    return [f.result() for f in finished]


def publish_dir(workdir: Path, final: Path) -> Path:
    """One finished record's work dir, its stage markers left out, put in place as `final` (atomic.replace_dir:
    `final` is always a whole folder, the old one or this)."""
    for marker in (MSA_DONE, PREDICT_DONE):
        (workdir / marker).unlink(missing_ok=True)
    atomic.replace_dir(workdir, final)
    return final


def publish(
    store: ArtifactStore,
    job_id: str,
    records: list[FastaRecord],
    workdir_of: Callable[[FastaRecord], Path],
    summaries: list[dict[str, Any]],
) -> dict[str, str]:
    """Copy each record's results to jobs/<id>/output/<slug>/ and write predictions.json last; returns the job's
    artifacts entries (name -> store key)."""
    artifacts: dict[str, str] = {}
    for record in records:
        workdir = workdir_of(record)
        for path in output_files(workdir):
            name = f"{record.slug}/{path.relative_to(workdir).as_posix()}"
            artifacts[name] = layout.output_key(job_id, name)
            store.put_file(artifacts[name], path)
    summary = {**prediction_mode(records), "records": summaries}
    artifacts[layout.PREDICTIONS] = layout.predictions_key(job_id)
    store.put_bytes(artifacts[layout.PREDICTIONS], (json.dumps(summary, indent=2) + "\n").encode())
    return artifacts


__all__ = [
    "CASP14_NOTE", "MSA_DONE", "PREDICT_DONE", "PipelineStages", "Prepared", "StageRunner", "msa_done", "msa_rows",
    "prepare",
    "output_files", "prediction_mode", "publish", "publish_dir", "read_records", "summary_of", "report_fields", "run_config_for", "run_msa_record",
    "run_predict_records", "overlapped",
]
