"""Faults of the local server's worker, each injected at a real seam, each ending with the job FAILED with its stage
and reason (or finished), a notification in the outbox, and nothing half-written under jobs/<id>/output/:

- a stage that raises: a corrupt sequence database file (MSA), and the model raising during the prediction;
- the outputs directory running out of space while the results are published (ENOSPC from the store's writes and
  the job log's appends, as a full file system answers them).

SIGKILL of `af2 serve` mid-MSA is tests/functional/test_serve_e2e.py; mid-predict is test_faults_restart.py."""

from __future__ import annotations

import contextlib
import errno
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from af2jobs import atomic, jobrun, wiring
from af2jobs.adapters.local import worker as worker_mod
from af2jobs.api.routes import log_tail
from af2jobs.models import Job, JobState, Principal
from af2jobs.request import JobRequest
from tests.conftest import UBIQUITIN

pytestmark = pytest.mark.pipeline

S = JobState
ANN = Principal("ann")
# The shapes of tests/functional/test_worker.py: the tiny model compiles once per session.
TINY = {"profile": "tiny", "max_msa_clusters": 16, "max_extra_msa": 32, "models_to_relax": "none"}


@pytest.fixture
def build(settings_factory):
    made: list[wiring.Services] = []

    def make(isolate: bool = True, **settings: Any) -> wiring.Services:
        # isolate=False for a test that patches the pipeline in this process: the prediction must run here too.
        services = wiring.build(settings_factory(**settings), run_overrides=TINY, isolate=isolate)
        made.append(services)
        services.worker.start()
        return services

    yield make
    for services in reversed(made):
        services.close()


def submit(services: wiring.Services, **fields: Any) -> Job:
    body = {"fasta": "ubq", "sequence": UBIQUITIN, "model_names": ["model_1"], "strategy": "best", **fields}
    return services.service.submit(ANN, JobRequest.parse(body))


def outbox(services: wiring.Services, job_id: str) -> dict[str, dict]:
    found = {}
    for path in sorted(services.settings.outbox_dir.glob(f"*-{job_id}-*.json")):
        message = json.loads(path.read_text())
        found[message["event"]] = message
    return found


def settled(services: wiring.Services, job_id: str, timeout: float = 180) -> Job:
    """The finished job once its notification is written (the worker's last act on it)."""
    deadline = time.monotonic() + timeout
    while not (job := services.repo.get(job_id)).finished:
        assert time.monotonic() < deadline, f"job {job_id} is stuck in {job.state.value} ({job.progress})"
        time.sleep(0.05)
    while job.state.value.lower() not in outbox(services, job_id):
        assert time.monotonic() < deadline, f"job {job_id} is {job.state.value} but no notification was written"
        time.sleep(0.05)
    return job


def job_files(services: wiring.Services, job_id: str) -> list[str]:
    root = services.settings.artifacts_dir / "jobs" / job_id
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_failed_cleanly(services: wiring.Services, job: Job, stage: str) -> dict:
    """FAILED in `stage`, notified with the same error, no results: nothing under output/, no in-flight files."""
    assert job.state is S.FAILED, job
    assert job.error is not None and job.error.stage == stage, job.error
    message = outbox(services, job.id)["failed"]
    assert message["error"] == job.error.model_dump() and message["state"] == "FAILED"
    files = job_files(services, job.id)
    assert not [f for f in files if f.startswith("output/")], files
    assert not [f for f in files if ".tmp-" in f], files
    assert set(job.artifacts) <= {"input.fasta", "log.txt"}  # no result among them
    return message


# ---------------------------------------------------------------------------------------------------------------
# A stage that raises


def test_a_corrupt_sequence_database_fails_the_job_in_msa_naming_the_file(build, demo_db_root, tmp_path):
    root = tmp_path / "db"
    (root / "uniref90").mkdir(parents=True)
    (root / "uniref90" / "uniref90.fasta").write_bytes(bytes(range(256)) * 64)  # not a sequence file
    for name in ("mgnify", "small_bfd", "pdb70", "pdb_mmcif"):  # reduced_dbs' other databases
        (root / name).symlink_to(demo_db_root / name)
    services = build(db_root=root)
    job = settled(services, submit(services, db_preset="reduced_dbs").id)

    assert_failed_cleanly(services, job, "msa")
    assert job.error.type == "StageError"
    assert "uniref90" in job.error.message and "uniref90.fasta" in job.error.message
    assert f"FAILED in msa: StageError: {job.error.message}" in log_tail(services.store, job.id)[-1]


def test_the_model_raising_during_the_prediction_fails_the_job_in_predict(build, monkeypatch):
    from af2jobs.pipeline import predict

    def broken(self: Any, raw: dict) -> Any:
        raise RuntimeError("INTERNAL: the device was lost")

    monkeypatch.setattr(predict.Predictor, "predict", broken)
    services = build(isolate=False)
    job = settled(services, submit(services).id)

    assert_failed_cleanly(services, job, "predict")
    assert (job.error.type, job.error.message) == ("RuntimeError", "INTERNAL: the device was lost")
    assert {"MSA", "PREDICTING", "FAILED"} <= set(job.phases)


# ---------------------------------------------------------------------------------------------------------------
# Disk full


class FullDisk:
    """A file system under `root` with `free` bytes left (None: unlimited). Writes past it fail with ENOSPC, after
    writing what fitted, as write(2) does. Reaches the store's writes (temp file + rename) and the job log."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.free: int | None = None
        self.refused: list[str] = []

    def writer(self, path: Path, f: Any) -> Any:
        disk = self

        class Budgeted:
            def write(self, data: bytes | str) -> int:
                if disk.free is not None and len(data) > disk.free:
                    f.write(data[: disk.free])
                    disk.free = 0
                    disk.refused.append(str(path))
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
                if disk.free is not None:
                    disk.free -= len(data)
                return f.write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(f, name)

            def __enter__(self) -> Budgeted:
                return self

            def __exit__(self, *exc: Any) -> None:
                f.close()

        return Budgeted()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        disk = self
        replacing = atomic.replacing

        @contextlib.contextmanager
        def store_write(path: Any, mode: str = "wb", **options: Any) -> Iterator[Any]:
            with replacing(path, mode, **options) as f:
                yield disk.writer(Path(path), f) if Path(path).resolve().is_relative_to(disk.root) else f

        def log_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = open(path, mode, *args, **kwargs)
            if "a" in mode and Path(path).resolve().is_relative_to(disk.root):
                return disk.writer(Path(path), f)
            return f

        monkeypatch.setattr(atomic, "replacing", store_write)  # the store's writes (temp file + rename)
        monkeypatch.setattr(worker_mod, "open", log_open, raising=False)  # the worker's log appends


def test_a_full_outputs_disk_while_publishing_fails_the_job_with_nothing_half_written(build, monkeypatch):
    services = build(isolate=False)
    disk = FullDisk(services.settings.artifacts_dir)
    disk.install(monkeypatch)
    publish = jobrun.publish

    def publish_on_a_filling_disk(store, job_id, records, workdir_of, summaries):
        # Room for the first output file and a little more: the second one is cut short.
        first = jobrun.output_files(workdir_of(records[0]))[0]
        disk.free = first.stat().st_size + 1000
        return publish(store, job_id, records, workdir_of, summaries)

    monkeypatch.setattr(jobrun, "publish", publish_on_a_filling_disk)
    job = submit(services)
    stored_input = services.store.get_bytes(f"jobs/{job.id}/input.fasta")
    job = settled(services, job.id)

    assert disk.refused and "/output/" in disk.refused[0]  # the fault did strike while publishing
    message = assert_failed_cleanly(services, job, "outputs")
    assert job.error.type == "OSError" and "No space left on device" in job.error.message
    assert "No space left on device" in message["error"]["message"]
    # What was stored before is intact: the input as submitted, the log up to the fault.
    assert services.store.get_bytes(f"jobs/{job.id}/input.fasta") == stored_input
    assert stored_input.startswith(b">ubq\n") and b"".join(stored_input.split(b"\n")[1:]) == UBIQUITIN.encode()
    assert any("predict" in line for line in log_tail(services.store, job.id))
