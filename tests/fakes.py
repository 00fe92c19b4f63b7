"""In-memory fakes of the ports, for tests that need no database, no AWS and no JAX:

    RecordingOrchestrator, RecordingNotifier   what the service and API tests check was asked of them
    MemoryJobRepository, MemoryArtifactStore   held to the same contract suite as SQLite/DynamoDB and the
                                               directory/S3 stores (tests/functional/test_repository_contract.py)
    FakeStages                                 a StageRunner that writes the pipeline's file contract (msas/,
                                               features.pkl, ranked_0.pdb, versions.json, ...) without running
                                               it, so the lifecycle around the stages is tested without JAX
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from af2jobs import errors, layout
from af2jobs.adapters.records import changed, check_limit, decode_token, encode_token, expected_states, move_conflict
from af2jobs.adapters.records import states_of
from af2jobs.fasta import FastaRecord
from af2jobs.jobrun import Prepared
from af2jobs.models import TERMINAL, Job, JobEvent, JobState
from af2jobs.ports import StateFilter
from af2jobs.runconfig import RunConfig


@dataclass
class RecordingOrchestrator:
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    fail_start: bool = False

    def start(self, job: Job) -> None:
        if self.fail_start:
            raise RuntimeError("no capacity")
        self.started.append(job.id)

    def cancel(self, job: Job) -> None:
        self.cancelled.append(job.id)


@dataclass
class RecordingNotifier:
    events: list[tuple[str, JobEvent]] = field(default_factory=list)
    broken: bool = False

    def notify(self, job: Job, event: JobEvent) -> None:
        if self.broken:
            raise ConnectionError("mail server down")
        self.events.append((job.id, event))


class MemoryJobRepository:
    """A JobRepository in a dict, one lock around every read-check-write."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def create(self, job: Job) -> Job:
        with self._lock:
            if job.idempotency_key is not None:
                for existing in self._jobs.values():
                    if (existing.owner, existing.idempotency_key) == (job.owner, job.idempotency_key):
                        return existing
            if job.id in self._jobs:
                raise errors.ConflictError(f"job {job.id} already exists")
            self._jobs[job.id] = job.model_copy(deep=True)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._get(job_id).model_copy(deep=True)

    def _get(self, job_id: str) -> Job:
        if job_id not in self._jobs:
            raise errors.NotFoundError(f"no job {job_id}", field="id")
        return self._jobs[job_id]

    def list(self, owner: str | None, state: StateFilter = None, limit: int = 50,
             token: str | None = None) -> tuple[list[Job], str | None]:
        check_limit(limit)
        after = decode_token(token) if token is not None else None
        states = states_of(state)
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        picked = [j for j in jobs if (owner is None or j.owner == owner) and (states is None or j.state in states)
                  and (after is None or (j.created_at, j.id) < after)]
        page = [j.model_copy(deep=True) for j in picked[:limit]]
        return page, (encode_token(page[-1]) if len(picked) > limit else None)

    def transition(self, job_id: str, expected_from: Collection[JobState], to: JobState, **changes: Any) -> Job:
        to = JobState(to)
        expected = expected_states(expected_from, to)
        with self._lock:
            job = self._get(job_id)
            if job.state not in expected:
                raise move_conflict(job, expected, to)
            self._jobs[job_id] = changed(job, changes, to=to)
            return self._jobs[job_id].model_copy(deep=True)

    def update(self, job_id: str, *, expected_from: Collection[JobState] | None = None, **changes: Any) -> Job:
        with self._lock:
            job = self._get(job_id)
            if expected_from is not None and job.state not in {JobState(s) for s in expected_from}:
                raise errors.ConflictError(f"job {job_id} is {job.state.value}; not updated")
            self._jobs[job_id] = changed(job, changes)
            return self._jobs[job_id].model_copy(deep=True)

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._get(job_id)
            if job.state not in TERMINAL:
                raise errors.ConflictError(f"job {job_id} is {job.state.value}; only finished jobs can be deleted")
            del self._jobs[job_id]


class MemoryArtifactStore:
    """An ArtifactStore in a dict, with the stores' key rules; its URLs are data: URLs of the object."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes) -> None:
        layout.check_key(key)
        with self._lock:
            self._objects[key] = bytes(data)

    def put_file(self, key: str, path: Path) -> None:
        layout.check_key(key)
        data = Path(path).read_bytes()  # FileNotFoundError before anything changes
        self.put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes:
        layout.check_key(key)
        with self._lock:
            if key not in self._objects:
                raise errors.NotFoundError(f"no object {key}", field="key")
            return self._objects[key]

    def list(self, prefix: str) -> list[str]:
        if "/" in prefix:
            layout.check_key(prefix.rsplit("/", 1)[0], prefix=True)
        with self._lock:
            return sorted(k for k in self._objects if k.startswith(prefix))

    def delete_prefix(self, job_id: str) -> int:
        if not isinstance(job_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", job_id):
            raise errors.ValidationError(f"job id {job_id!r} is not a plain identifier", field="job_id")
        prefix = layout.job_prefix(job_id)
        with self._lock:
            gone = [k for k in self._objects if k.startswith(prefix)]
            for key in gone:
                del self._objects[key]
        return len(gone)

    def upload_url(self, key: str, expires_s: int = 3600) -> str | None:
        layout.check_key(key)
        return None

    def url(self, key: str, expires_s: int = 3600) -> str:
        data = self.get_bytes(key)
        return "data:application/octet-stream;base64," + base64.b64encode(data).decode()


class FakeStages:
    """A StageRunner writing the pipeline's file contract with made-up contents. `fail` (stage name -> exception)
    makes a stage raise; `hold` (stage name -> Event) makes it wait, reporting progress, until the event is set
    or the job is cancelled."""

    def __init__(self) -> None:
        self.fail: dict[str, Exception] = {}
        self.hold: dict[str, threading.Event] = {}
        self.ran: list[tuple[str, str]] = []  # (stage, record)
        self.warmed: list[tuple[str, int]] = []  # (record made ready ahead, predictions begun before)

    def prepare(self, job: Job, records: list[FastaRecord], supplied: dict[str, tuple[str, bytes]], *,
                progress: Callable[..., None], should_cancel: Callable[[], bool]) -> Prepared:
        config = RunConfig(model_names=tuple(job.request.model_names), strategy=job.request.strategy,
                           profile="tiny")
        return Prepared(config, job.request.preset, [],
                        {"progress": progress, "should_cancel": should_cancel}, [], dict(supplied))

    def _run(self, stage: str, record: FastaRecord, prepared: Prepared) -> None:
        ctx = prepared.context
        ctx["progress"](stage, "start", {"record": record.name})
        self.ran.append((stage, record.name))
        if stage in self.fail:
            raise self.fail[stage]
        gate = self.hold.get(stage)
        while gate is not None and not gate.wait(0.02):
            if ctx["should_cancel"]():
                raise errors.CancelledError(f"the job was cancelled during {stage}")
        ctx["progress"](stage, "done", {})

    def msa(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> dict[str, Any]:
        self._run("msa", record, prepared)
        (workdir / "msas").mkdir(exist_ok=True)
        (workdir / "msas" / "uniref90_hits.sto").write_text(f"# STOCKHOLM 1.0\nquery {record.sequence}\n//\n")
        (workdir / "features.pkl").write_bytes(b"features")
        timings = {"msa": {"cache": "off", "cache_key": "", "seconds": 0.0, "search_s": 0.0}}
        (workdir / "timings.json").write_text(json.dumps(timings))
        return timings

    def predict_warm(self, record: FastaRecord, workdir: Path, prepared: Prepared) -> None:
        self.warmed.append((record.name, sum(stage == "predict" for stage, _ in self.ran)))
        if "warm" in self.fail:
            raise self.fail["warm"]

    def capacity(self) -> tuple[str, str, int]:
        from af2jobs import memory

        return "cpu", "cpu", memory.host_bytes() - memory.HOST_RESERVE

    def predict_begin(self, record: FastaRecord, workdir: Path, prepared: Prepared):
        self._run("predict", record, prepared)
        model = prepared.run_config.model_names[0]
        (workdir / "ranked_0.pdb").write_text(f"REMARK fake structure of {record.name}\nEND\n")
        (workdir / "versions.json").write_text(json.dumps({"params_status": "UNTRAINED", "note": "fake stages"}))
        best = {"model": model, "mean_plddt": 50.0, "ptm": 0.5}
        result = {"timings": {}, "best": best, "untrained": True}
        return lambda: result


class ProcessStages(FakeStages):
    """FakeStages as a GPU slot's prediction process runs them (Worker(isolate=True, slot_stages=ProcessStages)):
    a record named "die" kills its process as the kernel's out-of-memory killer would, "stuck" never returns (a
    compile, an iteration that does not poll the cancel flag), "hog" takes memory until it is stopped; every
    other record's versions.json names the process that predicted it."""

    def predict_begin(self, record: FastaRecord, workdir: Path, prepared: Prepared):
        import os
        import signal
        import time

        if record.name == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if record.name == "stuck":
            time.sleep(3600)
        if record.name == "hog":
            held = []
            while True:
                held.append(bytearray(b"\x01") * (64 << 20))  # written: resident, not just reserved
                time.sleep(0.05)  # 1.3 GB/s: the server's 0.1 s look sees it before the machine runs out
        finish = super().predict_begin(record, workdir, prepared)
        versions = json.loads((workdir / "versions.json").read_text())
        (workdir / "versions.json").write_text(json.dumps({**versions, "pid": os.getpid()}))
        return finish
