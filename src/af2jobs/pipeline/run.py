"""The stages of one prediction, as separate steps with a file contract (as MSA and GPU jobs run them):

    msa_stage      record -> workdir/msas/*, workdir/features.pkl           (CPU)
    predict_begin  workdir/features.pkl -> ranked_*.pdb/.cif, JSON outputs   (GPU when JAX sees one; the structures,
                   relax and report in the call it returns)

af2jobs.jobrun runs them for a record, for every entry (jobs, and af2 predict), through jobrun.PipelineStages: the
markers that tell finished work from work cut short, the order of a job's records and the publishing are its.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from datetime import date
from pathlib import Path
from typing import Callable

from af2jobs import atomic
from af2jobs.errors import Af2JobsError, CancelledError, StageError
from af2jobs.fasta import FastaRecord
from af2jobs.pipeline import databases as db_mod
from af2jobs.pipeline import features as features_mod
from af2jobs.pipeline import msa as msa_mod
from af2jobs.pipeline import multimer as multimer_mod
from af2jobs.pipeline import outputs
from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline import inputs as inputs_mod
from af2jobs.pipeline import predict as predict_mod
from af2jobs.pipeline import relax as relax_mod
from af2jobs.pipeline import templates as templates_mod
from af2jobs.pipeline import report
from af2jobs.pipeline.context import Context
from af2jobs.pipeline.devices import device_kind
from af2jobs.pipeline.results import Prediction
from af2jobs.runconfig import RunConfig

log = logging.getLogger(__name__)

INPUTS_DIR = "inputs"  # the processed features the MSA stage prepared for the GPU stage


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
        files = inputs_mod.prepare_inputs(ctx.inputs_run, feats, workdir / INPUTS_DIR)
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


def _depth(prediction: Prediction, feats: dict, timings: dict, run: RunConfig) -> dict:
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
            prediction, dbs, ctx.run.model_dump(mode="json"), device_kind(),
            msa_supplied=msa_mod.supplied(workdir / "msas") is not None, templates=used,
            msa_depth=timings["msa_depth"], msa_engine=next(
                (s["engine"] for s in timings.get("msa", {}).get("searches", []) if s.get("engine")), None)))
        timings["outputs"] = {"seconds": round(time.perf_counter() - t0, 3)}
        atomic.write_json(workdir / "timings.json", timings)
        report.write_record_report(workdir, record, ctx, timings)
        return {"timings": timings, "best": prediction.ranked[0].summary(),
                "untrained": prediction.ranked[0].params.untrained}

    return finish


def check_databases(records: list[FastaRecord], ctx: Context) -> None:
    """StageError (of the msa stage, which needs them) naming a database that a record's search needs and that is
    not installed: checked before any search, so that a job does not search some records and then fail. `records`:
    those to be searched (not those that brought their MSA)."""
    for record in records:
        try:
            msa_mod.searched_for(record, ctx.databases, ctx.run.db_preset, ctx.run.msa_mode)
        except Af2JobsError as exc:
            raise StageError(exc.message, stage="msa") from None


def prefetch_msas(records: list[FastaRecord], ctx: Context) -> int:
    """msa_mode mmseqs2: the records' searches in one MMseqs2 run, into the MSA cache (msa.prefetch), before the
    records run one by one: each monomer's and each distinct chain of each complex (its unpaired MSA; the pairing
    is the complex's own run). `records`: those to be searched (not those that brought their MSA)."""
    if ctx.run.msa_mode != "mmseqs2" or not ctx.settings.msa_cache:
        return 0
    sequences = [seq for r in records for _, seq in msa_mod.unique_chains(r)]
    try:
        searched = db_mod.for_mode(ctx.databases, ctx.run.msa_mode, ctx.run.db_preset)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="msa") from None
    return msa_mod.prefetch(sequences, searched, cpus=ctx.settings.cpus, cache_root=ctx.settings.cache_dir / "msa",
                            progress=lambda db, event, details: ctx.progress("msa", f"database_{event}",
                                                                             {"database": db, **details}))


__all__ = ["check_databases", "msa_stage", "predict_begin", "predict_warm", "prefetch_msas"]
