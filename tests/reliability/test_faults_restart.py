"""SIGKILL of `af2 serve` in the middle of a prediction, then a restart on the same data directory: the job is
predicted again from its finished MSA and SUCCEEDED, with a complete set of outputs, none left from the killed run.
(SIGKILL in the middle of the MSA: tests/functional/test_serve_e2e.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from af2jobs.adapters.local.sqlite import SqliteJobRepository
from tests.conftest import UBIQUITIN
from tests.functional.test_serve_e2e import AF2, Server, call, poll

# About a minute (two server starts, a compile, two predictions): `make reliability`.
pytestmark = [pytest.mark.pipeline, pytest.mark.reliability_long]

MODELS = ["model_1", "model_2", "model_3", "model_4", "model_5"]
# What a finished record publishes (jobrun.OUTPUT_FILES), for five models.
RECORD_FILES = {
    *(f"ranked_{i}.pdb" for i in range(5)), *(f"ranked_{i}.cif" for i in range(5)),
    *(f"confidence_{m}_full.json" for m in MODELS),
    "ranking_debug.json", "timings.json", "versions.json", "features.pkl", "report.html",
}


@pytest.fixture
def env(settings_factory) -> dict[str, str]:
    s = settings_factory()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AF2_")}
    return {**clean, "AF2_DATA_DIR": str(s.data_dir), "AF2_DB_ROOT": str(s.database_root),
            "AF2_PARAMS_DIR": str(s.params_root), "AF2_CPUS": "2", "AF2_MAX_MSA_CLUSTERS": "16",
            "AF2_MAX_EXTRA_MSA": "32"}


def mid_predict(job: dict) -> bool:
    # Past the compile, between the recycles of the second model or later: outputs of model 1 exist in memory only.
    progress = job["progress"] or {}
    return job["state"] == "PREDICTING" and "recycle" in (progress.get("message") or "") and \
        "model_1" not in (progress.get("message") or "")


def test_sigkill_mid_predict_then_restart_predicts_again_and_publishes_complete_outputs(env, tmp_path):
    data = Path(env["AF2_DATA_DIR"])
    server = Server(env, tmp_path / "serve-1.log")
    try:
        key = subprocess.run([*AF2, "keys", "create", "--owner", "alice"], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        body = {"fasta": "ubq", "sequence": UBIQUITIN, "model_names": MODELS, "strategy": "all",
                "models_to_relax": "none"}
        status, answer = call(server, key, "POST", "/jobs", body)
        assert status == 201, answer
        victim = json.loads(answer)["id"]
        poll(server, key, victim, mid_predict, timeout=240, every=0.05)
    finally:
        killed = server.close(signal.SIGKILL)
    assert killed == -signal.SIGKILL
    assert SqliteJobRepository(data / "jobs.sqlite3").get(victim).state.value == "PREDICTING"
    job_dir = data / "artifacts" / "jobs" / victim
    assert not (job_dir / "output").exists()  # nothing published by the killed run

    server = Server(env, tmp_path / "serve-2.log")
    try:
        server.expect(f"{victim}: prediction again")
        job = poll(server, key, victim, lambda j: j["finished"], timeout=240)
        assert job["state"] == "SUCCEEDED", job["error"]
        published = {p.relative_to(job_dir / "output" / "ubq").as_posix()
                     for p in (job_dir / "output" / "ubq").rglob("*") if p.is_file()}
        assert RECORD_FILES <= published, RECORD_FILES - published
        assert not [p for p in job_dir.rglob("*") if ".tmp-" in p.name or ".partial-" in p.name]
        assert {f"ubq/{name}" for name in RECORD_FILES} <= set(job["artifacts"])
        ranking = json.loads(call(server, key, "GET", job["links"]["ubq/ranking_debug.json"])[1])
        assert sorted(ranking["order"]) == sorted(MODELS)  # every model of the re-run, none missing
        status, log = call(server, key, "GET", f"/jobs/{victim}/file?path=log.txt")
        assert status == 200 and b"interrupted by a restart in PREDICTING" in log
        outbox = sorted((data / "outbox").glob(f"*-{victim}-succeeded-*.json"))
        assert len(outbox) == 1
    finally:
        assert server.close() == 0
