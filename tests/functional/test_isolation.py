"""The local worker's GPU slot predicting in a process of its own (adapters/local/slot.py), with fake stages there
(tests/fakes.py ProcessStages): a prediction that dies, hangs, or takes more memory than it may ends its job alone,
saying why, and the next job runs; a record estimated not to fit fails before its MSA; a cancel stops a prediction
that never polls its flag."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from af2jobs import wiring
from af2jobs.adapters.local.slot import CANCEL_GRACE_S
from af2jobs.adapters.local.worker import LocalOrchestrator, Worker
from af2jobs.models import Job, JobState, Principal
from af2jobs.request import JobRequest
from af2jobs.service import JobService
from af2jobs.settings import Settings
from tests.conftest import UBIQUITIN
from tests.fakes import FakeStages, ProcessStages

S = JobState
ANN = Principal(owner="ann")


class Local:
    def __init__(self, tmp_path: Path, **settings) -> None:
        self.settings = Settings(data_dir=tmp_path / "data", cpu_workers=1, **settings)
        parts = wiring.local_parts(self.settings)
        self.repo, self.store = parts.repo, parts.store
        self.stages = FakeStages()
        self.worker = Worker(parts.repo, parts.store, parts.notifier, self.settings, stages=self.stages, isolate=True,
                             slot_stages=ProcessStages, make_parts=wiring.local_parts)
        self.service = JobService(parts.repo, parts.store, LocalOrchestrator(self.worker), parts.notifier,
                                  self.settings)
        self.worker.start()

    def submit(self, name: str, sequence: str = UBIQUITIN) -> Job:
        return self.service.submit(ANN, JobRequest.parse({"fasta": name, "sequence": f">{name}\n{sequence}\n",
                                                          "model_names": ["model_1"]}))

    def wait(self, job_id: str, done: Callable[[Job], bool] = lambda j: j.finished, timeout: float = 60) -> Job:
        deadline = time.monotonic() + timeout
        while not done(job := self.repo.get(job_id)):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        return job

    def pid(self, job: Job) -> int:
        return json.loads(self.store.get_bytes(job.artifacts[f"{job.request.fasta}/versions.json"]))["pid"]

    def log(self, job_id: str) -> str:
        return self.store.get_bytes(f"jobs/{job_id}/log.txt").decode()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    made = Local(tmp_path)
    yield made
    made.worker.stop()


def test_predictions_run_in_the_slots_process_which_lives_across_jobs(local: Local) -> None:
    first, second = (local.wait(local.submit(name).id) for name in ("a", "b"))
    assert first.state is second.state is S.SUCCEEDED
    assert local.pid(first) == local.pid(second) != os.getpid()


def test_a_prediction_whose_process_dies_fails_its_job_alone_and_the_next_job_runs(local: Local) -> None:
    died = local.wait(local.submit("die").id)
    assert died.state is S.FAILED and died.error.type == "PredictionDiedError" and died.error.stage == "predict"
    assert "was killed (SIGKILL), most likely by the kernel for want of memory" in died.error.message
    assert "the server and other jobs went on" in died.error.message
    assert not local.store.list(f"jobs/{died.id}/output/")
    after = local.wait(local.submit("after").id)
    assert after.state is S.SUCCEEDED and local.pid(after) != os.getpid()


def test_a_cancel_stops_a_prediction_that_never_polls_its_flag(local: Local) -> None:
    stuck = local.wait(local.submit("stuck").id, lambda j: j.state is S.PREDICTING)
    time.sleep(0.5)  # inside the prediction
    started = time.monotonic()
    assert local.service.cancel(ANN, stuck.id).state is S.CANCELLING
    job = local.wait(stuck.id, timeout=CANCEL_GRACE_S + 20)
    assert job.state is S.CANCELLED and time.monotonic() - started < CANCEL_GRACE_S + 10
    assert "its process was killed" in local.log(stuck.id)
    assert local.wait(local.submit("after").id).state is S.SUCCEEDED


def test_a_prediction_past_its_memory_is_stopped_and_fails_saying_so(tmp_path: Path) -> None:
    local = Local(tmp_path, prediction_memory_gb=3.0)  # above the estimate of its 76 residues
    try:
        hog = local.wait(local.submit("hog").id)
        assert hog.state is S.FAILED and "used more than AF2_PREDICTION_MEMORY_GB (3.0 GB)" in hog.error.message
        assert local.wait(local.submit("after").id).state is S.SUCCEEDED
    finally:
        local.worker.stop()


def test_a_record_estimated_not_to_fit_fails_before_its_msa(tmp_path: Path) -> None:
    from af2jobs import memory
    from af2jobs.runconfig import RunConfig

    # A cap between what a short and a long record need, by af2jobs.memory's estimate.
    run = RunConfig(model_names=("model_1",), profile="tiny", max_msa_clusters=64, max_extra_msa=128)
    short, long = (memory.prediction_bytes(n, run, "cpu", depth=1) for n in (76, 1200))
    local = Local(tmp_path, prediction_memory_gb=(short + long) / 2 / memory.GIB)
    try:
        big = local.wait(local.submit("big", "M" * 1200).id)
        assert big.state is S.FAILED and big.error.type == "MemoryLimitError" and "MSA" not in big.phases
        assert "record big (1,200 residues) needs about" in big.error.message
        assert "a prediction here may use" in big.error.message and ("msa", "big") not in local.stages.ran
        assert local.wait(local.submit("small").id).state is S.SUCCEEDED
    finally:
        local.worker.stop()


def test_a_slot_naming_a_gpu_that_is_not_there_fails_its_jobs_saying_so(tmp_path: Path) -> None:
    """AF2_GPUS=7 on a machine without that GPU: its process sees no GPU (JAX would fall back to the CPU), so the
    slot does not start, and each job that reaches it fails naming the setting instead of waiting for ever."""
    local = Local(tmp_path, gpus="7")
    try:
        job = local.wait(local.submit("a").id)
        assert job.state is S.FAILED and job.error.type == "ConfigurationError"
        assert "AF2_GPUS (--gpus) names GPU 7, and its prediction process sees no GPU there" in job.error.message
    finally:
        local.worker.stop()
