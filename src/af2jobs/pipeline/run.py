"""The stages of one prediction, as separate steps with a file contract (as MSA and GPU jobs run them):

    msa_stage      record -> workdir/msas/*, workdir/features.pkl           (CPU)
    predict_begin  workdir/features.pkl -> ranked_*.pdb/.cif, JSON outputs   (GPU when JAX sees one; the structures,
                   relax and report in the call it returns)

`predict_records` runs both for each record into a hidden staging directory and renames it into place at the end,
so a failed or cancelled prediction never leaves half-written results where finished ones are expected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

from af2jobs import atomic
from af2jobs.jobrun import prediction_mode, summary_of
from af2jobs.errors import Af2JobsError, CancelledError, StageError
from af2jobs.fasta import FastaRecord
from af2jobs.pipeline import databases as db_mod
from af2jobs.pipeline import features as features_mod
from af2jobs.pipeline import msa as msa_mod
from af2jobs.pipeline import multimer as multimer_mod
from af2jobs.pipeline import outputs
from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline import predict as predict_mod
from af2jobs.pipeline import relax as relax_mod
from af2jobs.pipeline import templates as templates_mod
from af2jobs.pipeline import report
from af2jobs.runconfig import RunConfig, resolve
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

StageProgress = Callable[[str, str, dict], None]  # (stage, event, details)


@dataclass
class Context:
    settings: Settings
    run: RunConfig
    progress: StageProgress = lambda stage, event, details: None
    should_cancel: Callable[[], bool] = lambda: False
    provider: params_mod.ParamsProvider | None = None
    databases: list[db_mod.Database] | None = None
    # What report.html says about the job: its comment, and the queue and GPU count its cost is priced on
    # (None: the queue `que: auto` picks for the record's length).
    comment: str = ""
    queue: str | None = None
    gpus: int = 1
    # af2 predict --msa: record name -> (format, text) of the MSA the caller brings (its search is skipped).
    supplied_msas: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    # The run the GPU stage will make, when the MSA stage is to prepare its processed features (inputs/): the AWS
    # MSA job for its GPU job. None: the predict stage processes them itself.
    inputs_run: RunConfig | None = None

    def __post_init__(self) -> None:
        s = self.settings
        if self.provider is None:
            self.provider = params_mod.ParamsProvider(s.params_root, s.cache_dir / "params-untrained")
        if self.databases is None:
            self.databases = db_mod.discover(s.database_root)
        # JAX's own variable wins: on AWS it points every Batch job at the shared file system's cache.
        predict_mod.enable_compilation_cache(Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or s.cache_dir / "jax"))


INPUTS_DIR = "inputs"  # the processed features the MSA stage prepared for the GPU stage


def resolve_run_config(settings: Settings, *, for_gpu: bool | None = None, **overrides) -> RunConfig:
    """runconfig.resolve for this process's device, or a GPU's with for_gpu (the run a GPU stage elsewhere will
    make)."""
    return resolve(settings, gpu=predict_mod.on_gpu() if for_gpu is None else for_gpu, **overrides)


def _read_timings(workdir: Path) -> dict:
    path = workdir / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _search(record: FastaRecord, workdir: Path, ctx: Context) -> tuple[msa_mod.MsaReport, list]:
    """The MSA: the request's own (msas/supplied_msa.*), or a search of the db_preset's databases."""
    own = msa_mod.supplied(workdir / "msas")
    if own is not None:
        ctx.progress("msa", "supplied", {"file": own.name})
        report = msa_mod.supplied_report(own)
        source = _templates(ctx)
        if source is not None:  # the templates are searched with the request's own MSA
            t0 = time.perf_counter()
            hits = templates_mod.search(workdir / "msas", source[0].path, own)
            report.searches.append(msa_mod.SearchReport("pdb70", templates_mod.HITS_NAME, hits,
                                                        round(time.perf_counter() - t0, 3)))
        return report, [source[0]] if source is not None else []
    try:
        searched = db_mod.for_mode(ctx.databases, ctx.run.msa_mode, ctx.run.db_preset)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="msa") from None
    ctx.progress("msa", "start", {"databases": [d.name for d in searched]})
    cache_root = ctx.settings.cache_dir / "msa" if ctx.settings.msa_cache else None
    report = msa_mod.run_msa(
        record.sequence, searched, workdir / "msas", cpus=ctx.settings.cpus, cache_root=cache_root,
        progress=lambda db, event, details: ctx.progress("msa", f"database_{event}", {"database": db, **details}),
    )
    return report, searched


def _templates(ctx: Context):
    try:
        return db_mod.template_source(ctx.databases)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="msa") from None


def _template_features(record: FastaRecord, workdir: Path, ctx: Context) -> dict:
    """Template features of the template search's hits (empty without template databases or hits)."""
    source = _templates(ctx)
    if source is None:
        return templates_mod.empty()
    mmcif = source[1].path
    when = ctx.run.max_template_date or date.today()
    try:
        feats, used = templates_mod.featurize(record.sequence, workdir / "msas", mmcif, when,
                                              mmcif.parent / db_mod.OBSOLETE)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="features") from None
    ctx.progress("templates", "done", {"used": len(used), "templates": ",".join(u["pdb_id"] for u in used)})
    return feats


def msa_stage(record: FastaRecord, workdir: Path, ctx: Context) -> dict:
    timings = _read_timings(workdir)
    if record.is_complex:
        return multimer_mod.msa_stage(record, workdir, ctx, timings)
    report, searched = _search(record, workdir, ctx)
    search_s = 0.0 if report.cache == "hit" else round(report.seconds, 3)
    timings["msa"] = {**report.to_dict(), "search_s": search_s}
    atomic.write_json(workdir / "msas" / "databases.json", [d.to_dict() for d in searched])
    ctx.progress("msa", "done", {"cache": report.cache, "seconds": report.seconds})
    if ctx.should_cancel():
        raise CancelledError("the job was cancelled after the MSA stage")

    ctx.progress("features", "start", {})
    t0 = time.perf_counter()
    try:
        template_feats = _template_features(record, workdir, ctx)
        feats = features_mod.build_features(record.sequence, record.name, workdir / "msas", template_feats)
    except ValueError as exc:
        raise StageError(str(exc), stage="features") from exc
    found = templates_mod.used(workdir / "msas")
    timings["templates"] = {"hits": found["hits"], "used": [u["pdb_id"] + "_" + u["chain"] for u in found["used"]],
                            "seconds": found["seconds"]} if found else {"hits": 0, "used": []}
    features_mod.write_features(feats, workdir / "features.pkl")
    timings["features"] = {"seconds": round(time.perf_counter() - t0, 3), "msa_rows": int(feats["msa"].shape[0])}
    if ctx.inputs_run is not None:  # the GPU stage's input pipeline, done here on the CPUs
        t0 = time.perf_counter()
        files = predict_mod.prepare_inputs(ctx.inputs_run, feats, workdir / INPUTS_DIR)
        timings["inputs"] = {"seconds": round(time.perf_counter() - t0, 3), "files": files}
    atomic.write_json(workdir / "timings.json", timings)
    ctx.progress("features", "done", {"msa_rows": int(feats["msa"].shape[0])})
    return timings


def predict_warm(record: FastaRecord, workdir: Path, ctx: Context) -> None:
    """Queues this record's prediction to be made ready in the background (its parameters read, its compiled
    applies loaded or compiled: predict.warm_in_background) and returns at once: a job's later records, while the
    GPU predicts the first ones."""

    def load() -> dict:
        with open(workdir / "features.pkl", "rb") as fh:
            return pickle.load(fh)

    predict_mod.warm_in_background(load, ctx.run, ctx.provider, workdir / INPUTS_DIR, ctx.should_cancel)


def _depth(prediction: predict_mod.Prediction, feats: dict, timings: dict, run: RunConfig) -> dict:
    """The MSA's depth as given, after de-duplication and as the best model read it (features_mod.depth_summary)."""
    best = prediction.ranked[0]
    clusters, extra = prediction.msa_caps
    fitted = run.model_copy(update={"max_msa_clusters": clusters, "max_extra_msa": extra})
    read = params_mod.msa_rows_read(params_mod.runtime_config(best.base_model, fitted))
    return features_mod.depth_summary((timings.get("msa") or {}).get("searches", []), int(feats["msa"].shape[0]),
                                      read, best.model)


def predict_begin(record: FastaRecord, workdir: Path, ctx: Context) -> Callable[[], dict]:
    """The predict stage's GPU half (the prediction); the call it returns does the CPU half (relax, structures,
    versions, report) and returns the stage's result. A job's next record can be predicted meanwhile
    (jobrun.overlapped): the CPU half's progress names its own record."""
    timings = _read_timings(workdir)
    with open(workdir / "features.pkl", "rb") as fh:
        feats = pickle.load(fh)
    ctx.progress("predict", "start", {"models": list(ctx.run.model_names), "strategy": ctx.run.strategy})
    t0 = time.perf_counter()
    predictor = predict_mod.Predictor(
        ctx.run, ctx.provider, progress=lambda event, details: ctx.progress("predict", event, details),
        should_cancel=ctx.should_cancel, inputs_dir=workdir / INPUTS_DIR,
    )
    prediction = predictor.predict(feats)
    timings["predict"] = {"seconds": round(time.perf_counter() - t0, 3),
                          "models": [r.summary() for r in prediction.runs], "inputs_used": predictor.inputs_used,
                          "msa_caps": list(prediction.msa_caps)}
    timings["msa_depth"] = _depth(prediction, feats, timings, ctx.run)
    ctx.progress("predict", "done", {"best": prediction.ranked[0].summary()})

    def finish() -> dict:
        def progress(stage: str, event: str, details: dict) -> None:
            ctx.progress(stage, event, {**details, "record": record.name})

        proteins = {run.model: outputs.unrelaxed_protein(run, prediction.features) for run in prediction.ranked}
        t0 = time.perf_counter()
        relaxed = relax_mod.relax_prediction(prediction, ctx.run.models_to_relax, proteins,
                                             progress=lambda event, details: progress("relax", event, details))
        timings["relax"] = {"seconds": round(time.perf_counter() - t0, 3),
                            "models": {m: r.summary() for m, r in relaxed.items()}}
        t0 = time.perf_counter()
        used = (multimer_mod.used_templates if record.is_complex else templates_mod.used)(workdir / "msas")
        outputs.write_structures(workdir, record.name, prediction, ctx.run.rank_by, proteins, relaxed, used)
        dbs_file = workdir / "msas" / "databases.json"
        dbs = json.loads(dbs_file.read_text()) if dbs_file.is_file() else []
        atomic.write_json(workdir / "versions.json", outputs.versions(
            prediction, dbs, ctx.run.model_dump(mode="json"), predict_mod.device_kind(),
            msa_supplied=msa_mod.supplied(workdir / "msas") is not None, templates=used,
            msa_depth=timings["msa_depth"], msa_engine=next(
                (s["engine"] for s in timings.get("msa", {}).get("searches", []) if s.get("engine")), None)))
        timings["outputs"] = {"seconds": round(time.perf_counter() - t0, 3)}
        atomic.write_json(workdir / "timings.json", timings)
        report.write_record_report(workdir, record, ctx, timings)
        return {"timings": timings, "best": prediction.ranked[0].summary(),
                "untrained": prediction.ranked[0].params.untrained}

    return finish


@dataclass
class RecordResult:
    record: FastaRecord
    out_dir: Path
    best: dict
    timings: dict
    untrained: bool
    extra: dict = field(default_factory=dict)


def _record_begin(record: FastaRecord, out_root: Path, ctx: Context) -> Callable[[], RecordResult]:
    """Both stages of one record, in a staging folder that replaces out_root/<slug> only once they are done, in
    two halves: the MSA stage and the prediction now; the rest of the predict stage, and the staging folder
    renamed into place, when the result is called. A failure in either removes the folder."""
    final = out_root / record.slug
    t0 = time.perf_counter()
    stack = contextlib.ExitStack()
    staging = stack.enter_context(atomic.staging_dir(final))
    try:
        (staging / "input.fasta").write_text(f">{record.name} {record.description}".rstrip() + f"\n{record.sequence}\n")
        if record.name in ctx.supplied_msas:
            fmt, data = ctx.supplied_msas[record.name]
            (staging / "msas").mkdir()
            (staging / "msas" / f"{msa_mod.SUPPLIED_MSA}.{fmt}").write_bytes(data)
        msa_stage(record, staging, ctx)
        finish = predict_begin(record, staging, ctx)
    except BaseException:
        stack.__exit__(*sys.exc_info())  # the staging folder goes; staging_dir never swallows the error
        raise

    def done() -> RecordResult:
        with stack:
            result = finish()
            timings = result["timings"]
            timings["total_s"] = round(time.perf_counter() - t0, 3)
            atomic.write_json(staging / "timings.json", timings)
        return RecordResult(record, final, result["best"], timings, result["untrained"])

    return done


def check_databases(records: list[FastaRecord], ctx: Context) -> None:
    """StageError (of the msa stage, which needs them) naming a database that a record's search needs and that is
    not installed: checked before any search, so that a job does not search some records and then fail."""
    for record in records:
        if record.name in ctx.supplied_msas:
            continue
        try:
            msa_mod.searched_for(record, ctx.databases, ctx.run.db_preset, ctx.run.msa_mode)
        except Af2JobsError as exc:
            raise StageError(exc.message, stage="msa") from None


def prefetch_msas(records: list[FastaRecord], ctx: Context) -> int:
    """msa_mode mmseqs2: the records' searches in one MMseqs2 run, into the MSA cache (msa.prefetch), before the
    records run one by one: each monomer's and each distinct chain of each complex (its unpaired MSA; the pairing
    is the complex's own run). Records with their own MSA are left out."""
    if ctx.run.msa_mode != "mmseqs2" or not ctx.settings.msa_cache:
        return 0
    sequences = [seq for r in records if r.name not in ctx.supplied_msas for _, seq in msa_mod.unique_chains(r)]
    try:
        searched = db_mod.for_mode(ctx.databases, ctx.run.msa_mode, ctx.run.db_preset)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="msa") from None
    return msa_mod.prefetch(sequences, searched, cpus=ctx.settings.cpus, cache_root=ctx.settings.cache_dir / "msa",
                            progress=lambda db, event, details: ctx.progress("msa", f"database_{event}",
                                                                             {"database": db, **details}))


def predict_records(records: list[FastaRecord], out_root: Path, ctx: Context) -> list[RecordResult]:
    """Each record is its own monomer prediction; predictions.json at the top says so. One record's relax,
    structures and report are made while the next is searched and predicted (jobrun.overlapped)."""
    from af2jobs.jobrun import overlapped

    check_databases(records, ctx)
    prefetch_msas(records, ctx)

    def begin(item: tuple[int, FastaRecord]) -> Callable[[], RecordResult]:
        i, record = item
        ctx.progress("record", "start", {"name": record.name, "index": i + 1, "total": len(records),
                                         "length": len(record.sequence)})
        return _record_begin(record, out_root, ctx)

    results = overlapped(list(enumerate(records)), begin, lambda done: done())
    atomic.write_json(out_root / "predictions.json", {
        **prediction_mode(records),
        "records": [summary_of(r.record, r.best, r.untrained, r.timings.get("msa_depth")) for r in results],
    })
    return results


__all__ = ["Context", "RecordResult", "check_databases", "msa_stage", "predict_begin", "predict_records", "predict_warm",
           "prefetch_msas", "resolve_run_config"]
