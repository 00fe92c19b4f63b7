"""The stage runner that the Batch entrypoint gets in the state machine tests in place of jobrun.PipelineStages
(sfn_support puts it there): no model and no search, and switches that make a stage fail or wait to be cancelled.

Real where it costs nothing, so that what the Batch stages, Validate and the tests read stays real: the job's
RunConfig (jobrun.run_config_for), the databases installed under AF2_DB_ROOT and those a record's search uses
(pipeline.databases, pipeline.msa.searched_for), and the MSA cache's keys and entries (pipeline.msa.record_keys, as
Validate keys them; an entry in the layout of the pipeline's local cache, which the stages share through S3). Made
up: the hits, the features, the structures and their scores. Not done: a request's own MSA (no test here brings
one) is searched like any other.

tests/fakes.py's FakeStages is the local worker's: one made-up MSA file, an MSA cache that is always off, and a
monomer's outputs. The Batch stages and the state machine's paths need more of the contract: the cache (Validate's
MsaCached? choice), a complex's chains and seeds, and failures on chosen runs of a stage.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from af2jobs import errors, jobrun
from af2jobs.awsrun.msacache import MSA_CACHE_REPORT
from af2jobs.fasta import CHAIN_IDS, FastaRecord
from af2jobs.jobrun import Prepared
from af2jobs.models import Job
from af2jobs.pipeline import databases as db_mod
from af2jobs.pipeline import msa as msa_mod
from af2jobs.settings import Settings

RECYCLE_S = 0.05  # between the recycles that a blocked stage reports
BLOCKED_AT_MOST_S = 60.0  # a blocked stage that no cancel reaches fails, so that the test fails instead of hanging


class FakeBatchStages:
    """A StageRunner for the Batch stages. One object serves every container of a test (`in_container` stands in
    for PipelineStages(settings, overrides)), so that a switch counts the runs of a stage across containers.

    Switches:
        fail_with(exc, on=stage, times=n)   the stage's next n runs raise exc (a Batch job's container exits with
                                            the code the entrypoint maps exc to: af2jobs.awsrun.contract)
        block(on=stage)                     the stage reports recycles, as a long prediction does, until the job
                                            is cancelled
    """

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.overrides: dict[str, Any] = {}
        self.failures: dict[str, list[BaseException]] = defaultdict(list)
        self.blocked: set[str] = set()
        self.ran: list[tuple[str, str]] = []  # (stage, record), failed and cancelled runs included

    # -- switches --------------------------------------------------------------------------------------------

    def fail_with(self, exc: BaseException, *, on: str, times: int = 1) -> None:
        self.failures[on] += [exc] * times

    def block(self, *, on: str) -> None:
        self.blocked.add(on)

    # -- the container's stage runner ------------------------------------------------------------------------

    def in_container(self, settings: Settings, overrides: Mapping[str, Any] | None = None) -> FakeBatchStages:
        """What jobrun.PipelineStages(settings, overrides) gives the entrypoint: this object, with the settings of
        the container that runs now (one at a time: sfn_support.BatchRunner)."""
        self.settings, self.overrides = settings, dict(overrides or {})
        return self

    def prepare(self, job: Job, records: list[FastaRecord], supplied: Mapping[str, tuple[str, bytes]], *,
                progress: Callable[..., None], should_cancel: Callable[[], bool]) -> Prepared:
        # The harness's CPU stands in for the GPU, as it does for the real stages (JAX sees no GPU there).
        run_config, notes = jobrun.run_config_for(job.request, self.settings, self.overrides, gpu=False)
        context = {"progress": progress, "should_cancel": should_cancel}
        return Prepared(run_config, job.request.preset, notes, context,
                        databases=db_mod.discover(self.settings.database_root), supplied=dict(supplied))

    def msa(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> dict[str, Any]:
        self._run("msa", record, prepared)
        run = prepared.run_config
        searched = msa_mod.searched_for(record, prepared.databases, run.db_preset, run.msa_mode)
        keys = msa_mod.record_keys(record, prepared.databases, run.db_preset, run.msa_mode)
        # A monomer's MSA is msas/ itself (its chain is ""); a complex's distinct chains have msas/<chain>/.
        reports = {chain: self._search(sequence, key, searched, workdir / "msas" / chain)
                   for (chain, sequence), key in zip(msa_mod.unique_chains(record), keys)}
        (workdir / "msas" / "databases.json").write_text(json.dumps([db.to_dict() for db in searched]))
        (workdir / "features.pkl").write_bytes(b"fake features")
        msa = self._timings(record, reports)
        prepared.context["progress"]("msa", "done", {"cache": msa["cache"]})
        timings = {"msa": msa, "features": {"seconds": 0.0, "msa_rows": 1 + sum(s["hits"] for s in msa["searches"])}}
        (workdir / "timings.json").write_text(json.dumps(timings))
        return timings

    def predict_warm(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> None:
        pass

    def capacity(self) -> tuple[str, str, int | None]:
        return "cpu", "cpu", None

    def predict_begin(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> Callable[[], dict[str, Any]]:
        self._run("predict", record, prepared)
        run = prepared.run_config
        names = [run.prediction_name(model, seed) for model in run.model_names for seed in range(run.seeds)]
        scores = {name: round(80.0 - i, 4) for i, name in enumerate(names)}
        best = {"model": names[0], "mean_plddt": 80.0, "ptm": 0.5, **({"iptm": 0.5} if record.is_complex else {})}
        (workdir / "ranked_0.pdb").write_text(_pdb(record))
        (workdir / "ranking_debug.json").write_text(json.dumps({
            "iptm+ptm" if record.is_complex else "plddts": scores, "order": names, "strategy": run.strategy,
            "screen": scores if run.strategy == "best" else {}, "untrained": True}))
        timings = json.loads((workdir / "timings.json").read_text())
        timings["predict"] = {"seconds": 0.0, "models": names}
        (workdir / "timings.json").write_text(json.dumps(timings))
        searched = json.loads((workdir / "msas" / "databases.json").read_text())
        engine = next((s["engine"] for s in timings["msa"]["searches"] if s.get("engine")), None)
        (workdir / "versions.json").write_text(json.dumps({
            "params_status": "UNTRAINED", "note": "fake stages: no model ran", "databases": searched,
            "db_preset": run.db_preset, "model_preset": run.model_preset, "msa_engine": engine,
            "run_config": run.model_dump(mode="json")}))
        prepared.context["progress"]("predict", "done", {"best": names[0]})
        result = {"timings": timings, "best": best, "untrained": True}
        return lambda: result

    # -- the made-up work ------------------------------------------------------------------------------------

    def _run(self, stage: str, record: FastaRecord, prepared: Prepared) -> None:
        ctx = prepared.context
        ctx["progress"](stage, "start", {})
        self.ran.append((stage, record.name))
        if self.failures[stage]:
            raise self.failures[stage].pop(0)
        if stage in self.blocked:
            deadline, recycle = time.monotonic() + BLOCKED_AT_MOST_S, 0
            while not ctx["should_cancel"]():
                if time.monotonic() > deadline:
                    raise errors.StageError(f"blocked for {BLOCKED_AT_MOST_S} s and never cancelled", stage=stage)
                model = prepared.run_config.model_names[0]
                ctx["progress"](stage, "recycle", {"model": model, "phase": "full", "recycle": recycle})
                recycle += 1
                time.sleep(RECYCLE_S)
            raise errors.CancelledError(f"the job was cancelled during {stage}")

    def _search(self, sequence: str, key: str, searched: list[db_mod.Database], out: Path) -> dict[str, Any]:
        """One sequence's searches, from the local MSA cache when its entry is there (an earlier job, or an entry
        that the stage fetched from S3), else made up and stored there as the pipeline stores them."""
        out.mkdir(parents=True, exist_ok=True)
        entry = self.settings.cache_dir / "msa" / key[:2] / key
        if self.settings.msa_cache and (entry / MSA_CACHE_REPORT).is_file():
            searches = json.loads((entry / MSA_CACHE_REPORT).read_text())
            for s in searches:
                (out / s["output"]).write_bytes((entry / s["output"]).read_bytes())
            return {"searches": searches, "cache": "hit", "cache_key": key}
        searches = [asdict(msa_mod.SearchReport(db.name, f"{db.name}_hits.sto", 1, 0.0)) for db in searched]
        for s in searches:
            (out / s["output"]).write_text(f"# STOCKHOLM 1.0\nquery {sequence}\nhit_1 {sequence}\n//\n")
        if not self.settings.msa_cache:
            return {"searches": searches, "cache": "off", "cache_key": key}
        entry.mkdir(parents=True)
        for s in searches:
            (entry / s["output"]).write_bytes((out / s["output"]).read_bytes())
        (entry / MSA_CACHE_REPORT).write_text(json.dumps(searches))  # last: an entry with it is complete
        return {"searches": searches, "cache": "miss", "cache_key": key}

    @staticmethod
    def _timings(record: FastaRecord, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """timings.json's "msa", as pipeline.run (a monomer) and pipeline.multimer (a complex) write it."""
        if not record.is_complex:
            return {**reports[""], "seconds": 0.0, "search_s": 0.0}
        caches = {r["cache"] for r in reports.values()}
        return {
            "searches": [{**s, "database": f"{c}:{s['database']}", "output": f"{c}/{s['output']}"}
                         for c, r in reports.items() for s in r["searches"]],
            "cache": caches.pop() if len(caches) == 1 else "miss",
            "cache_key": next(iter(reports.values()))["cache_key"],
            "seconds": 0.0, "search_s": 0.0,
            "entries": [{"chain": c, "cache": r["cache"], "cache_key": r["cache_key"]} for c, r in reports.items()],
        }


def _pdb(record: FastaRecord) -> str:
    """A CA trace on a line, a chain per sequence of the record (A for a monomer), in PDB's fixed columns."""
    chains = record.chains or [record]
    lines, serial = [], 0
    for chain_id, chain in zip(CHAIN_IDS, chains):
        for i in range(1, len(chain.sequence) + 1):
            serial += 1
            xyz = f"{3.8 * i:8.3f}{0.0:8.3f}{0.0:8.3f}"
            lines.append(f"ATOM  {serial:5d}  CA  UNK {chain_id}{i:4d}    {xyz}  1.00 80.00           C")
    return "\n".join([f"REMARK fake structure of {record.name}: no model ran", *lines, "END"]) + "\n"

