"""af2jobs.lifecycle: one named function per move, and the two runners that drive jobs through it (the local Worker
and the Batch stage) with a fake stage runner, so none of this loads JAX."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from af2jobs import errors, layout, lifecycle
from af2jobs.adapters.local.files import DirectoryArtifactStore
from af2jobs.adapters.local.worker import Worker
from af2jobs.api.routes import log_tail
from af2jobs.awsrun.contract import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from af2jobs.awsrun.stage import BatchStage
from af2jobs.models import Job, JobError, JobEvent, JobState, Principal
from af2jobs.request import JobRequest
from af2jobs.service import JobService
from af2jobs.settings import Settings
from tests.conftest import UBIQUITIN
from tests.fakes import FakeStages, MemoryArtifactStore, MemoryJobRepository, RecordingNotifier

S = JobState
ANN = Principal("ann")
TWO = f">a first\n{UBIQUITIN}\n>b second\n{UBIQUITIN[:40]}\n"


def _job(repo: MemoryJobRepository, state: JobState = S.QUEUED) -> Job:
    job = repo.create(Job(owner="ann", request=JobRequest.parse({"fasta": "ubq", "sequence": UBIQUITIN})))
    path = {S.VALIDATING: [S.VALIDATING], S.MSA: [S.VALIDATING, S.MSA],
            S.PREDICTING: [S.VALIDATING, S.MSA, S.PREDICTING]}.get(state, [])
    current = S.QUEUED
    for step in path:
        repo.transition(job.id, {current}, step)
        current = step
    return repo.get(job.id)


# ---------------------------------------------------------------------------------------------------------------
# The moves


def test_each_move_goes_where_its_name_says_and_says_so_on_the_record():
    repo = MemoryJobRepository()
    job = _job(repo)
    validating = lifecycle.begin_validation(repo, job.id, "reading the input")
    assert validating.state is S.VALIDATING and validating.artifacts["log.txt"] == layout.log_key(job.id)
    msa = lifecycle.begin_msa(repo, job.id, "starting", cost={"validating_s": 0.5})
    assert msa.state is S.MSA and msa.cost == {"validating_s": 0.5} and msa.progress.stage == "msa"
    predicting = lifecycle.begin_predict(repo, job.id, "starting the prediction")
    assert predicting.state is S.PREDICTING and predicting.progress.message == "starting the prediction"
    summaries = [{"name": "ubq", "best_model": "model_3", "mean_plddt": 71.25, "ptm": 0.61}]
    done = lifecycle.succeed(repo, job.id, summaries, cost={"predict_s": 2.0}, artifacts={"ubq/x": "jobs/x"})
    assert done.state is S.SUCCEEDED and done.progress.message == "ubq: best model_3, mean pLDDT 71.2, pTM 0.610"
    assert (done.progress.step, done.progress.total) == (1, 1)
    assert done.cost == {"validating_s": 0.5, "predict_s": 2.0} and done.artifacts["ubq/x"] == "jobs/x"


def test_a_move_from_the_wrong_state_conflicts_and_changes_nothing():
    repo = MemoryJobRepository()
    job = _job(repo, S.MSA)
    for move in (lambda: lifecycle.begin_validation(repo, job.id, "x"), lambda: lifecycle.begin_msa(repo, job.id, "x"),
                 lambda: lifecycle.succeed(repo, job.id, [], cost={}), lambda: lifecycle.finish_cancel(repo, job.id)):
        with pytest.raises(errors.ConflictError):
            move()
    assert repo.get(job.id) == job


def test_fail_names_the_error_in_the_progress_line_and_interrupted_names_the_restart():
    repo = MemoryJobRepository()
    job = _job(repo, S.MSA)
    failed = lifecycle.fail(repo, job.id, JobError(type="StageError", message="no database", stage="msa"))
    assert failed.state is S.FAILED and failed.progress.message == "msa: StageError: no database"
    cancelling = _job(repo, S.PREDICTING)
    lifecycle.request_cancel(repo, cancelling.id)
    with pytest.raises(errors.ConflictError):  # a cancel in progress wins over a late failure
        lifecycle.fail(repo, cancelling.id, JobError(type="X", message="late"))
    stuck = _job(repo, S.PREDICTING)
    interrupted = lifecycle.interrupted(repo, stuck, "its features are missing")
    assert interrupted.error.type == "Interrupted" and interrupted.error.stage == "predicting"
    assert interrupted.error.message == f"{lifecycle.INTERRUPTED} in PREDICTING, and its features are missing"


def test_a_cancel_finishes_at_once_when_queued_and_through_cancelling_when_running():
    repo = MemoryJobRepository()
    queued = _job(repo)
    assert lifecycle.finish_cancel(repo, queued.id).state is S.CANCELLED
    running = _job(repo, S.MSA)
    with pytest.raises(errors.ConflictError):
        lifecycle.finish_cancel(repo, running.id)  # its compute must stop first
    assert lifecycle.request_cancel(repo, running.id).state is S.CANCELLING
    cancelled = lifecycle.finish_cancel(repo, running.id)
    assert cancelled.state is S.CANCELLED and cancelled.progress.stage == "cancelled"
    assert list(cancelled.phases) == ["QUEUED", "VALIDATING", "MSA", "CANCELLING", "CANCELLED"]


def test_stage_progress_is_one_line_on_the_record_and_in_the_log():
    repo = MemoryJobRepository()
    job = _job(repo, S.MSA)
    lines: list[str] = []
    progress = lifecycle.StageProgress(repo, job.id, 2, lines.append, expected={S.MSA})
    progress.at(2, "second")
    progress("msa", "database_done", {"database": "uniref90", "hits": 12, "skipped": [1]})
    assert lines == ["second: msa database_done (database=uniref90 hits=12)"]
    record = repo.get(job.id).progress
    assert (record.stage, record.step, record.total, record.message) == ("msa", 2, 2, lines[0])
    assert progress.stage == "msa"
    lifecycle.begin_predict(repo, job.id, "on")
    with pytest.raises(errors.ConflictError):  # the job left the stage's state
        progress("msa", "database_done", {})


def test_an_event_of_the_record_finishing_beside_the_next_names_its_own_record():
    repo = MemoryJobRepository()
    job = _job(repo, S.MSA)
    lines: list[str] = []
    progress = lifecycle.StageProgress(repo, job.id, 2, lines.append, expected={S.MSA})
    progress.at(2, "second")  # the GPU predicts the second record while the first is relaxed
    progress("relax", "relax_done", {"model": "model_1", "record": "first"})
    assert lines == ["first: relax relax_done (model=model_1)"]


# ---------------------------------------------------------------------------------------------------------------
# The local Worker with a fake stage runner


@pytest.fixture
def local(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", cpu_workers=1)
    repo, store, notifier, stages = (MemoryJobRepository(), DirectoryArtifactStore(settings.artifacts_dir),
                                     RecordingNotifier(), FakeStages())
    worker = Worker(repo, store, notifier, settings, stages=stages)
    service = JobService(repo, store, _Inline(worker), notifier, settings)
    yield service, worker, stages
    worker.stop()


class _Inline:
    """An Orchestrator that starts nothing: the test runs the job with Worker.run_now."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def start(self, job: Job) -> None:
        pass

    def cancel(self, job: Job) -> None:
        self.worker.cancel(job)


def _submit(service: JobService, sequence: str = TWO) -> Job:
    return service.submit(ANN, JobRequest.parse({"fasta": "ubq", "sequence": sequence, "model_names": ["model_2"]}))


def _wait(service: JobService, job_id: str, state: JobState) -> None:
    deadline = time.monotonic() + 10
    while service.repo.get(job_id).state is not state:
        assert time.monotonic() < deadline, service.repo.get(job_id)
        time.sleep(0.01)


def test_run_now_takes_a_job_through_every_state_and_publishes_its_records(local):
    service, worker, stages = local
    job = worker.run_now(_submit(service).id)

    assert job.state is S.SUCCEEDED, job.error
    assert list(job.phases) == ["QUEUED", "VALIDATING", "MSA", "PREDICTING", "SUCCEEDED"]
    assert set(job.cost) == {"validating_s", "msa_s", "predict_s", "publish_s", "usd"}
    assert job.cost["usd"]["gpu_instance"] == "g5.2xlarge" and job.cost["usd"]["cpu_instance"] == "m6i.2xlarge"
    assert stages.ran == [("msa", "a"), ("msa", "b"), ("predict", "a"), ("predict", "b")]
    summary = json.loads(service.store.get_bytes(job.artifacts["predictions.json"]))
    assert [(r["name"], r["best_model"]) for r in summary["records"]] == [("a", "model_2"), ("b", "model_2")]
    versions = json.loads(service.store.get_bytes(job.artifacts["a/versions.json"]))
    assert versions["preset"] == "full" and versions["notes"] == ["fake stages"]
    assert service.store.get_bytes(job.artifacts["b/msas/uniref90_hits.sto"]).startswith(b"# STOCKHOLM")
    assert job.progress.message == "a: best model_2, mean pLDDT 50.0, pTM 0.500; b: best model_2, mean pLDDT 50.0, pTM 0.500"
    assert [e for _, e in service.notifier.events] == [JobEvent.SUBMITTED, JobEvent.SUCCEEDED]
    log = log_tail(service.store, job.id)
    assert "a: msa start" in "\n".join(log) and log[-1].endswith(job.progress.message)
    assert not (worker.root / layout.job_prefix(job.id) / "work").exists()


def test_a_stage_that_raises_fails_the_job_naming_the_stage(local):
    service, worker, stages = local
    stages.fail["predict"] = errors.StageError("the device was lost", stage="predict")
    job = worker.run_now(_submit(service).id)

    assert job.state is S.FAILED
    assert (job.error.type, job.error.stage, job.error.message) == ("StageError", "predict", "predict: the device was lost")
    assert job.progress.message == "predict: StageError: predict: the device was lost"
    assert not service.store.list(layout.output_prefix(job.id))  # nothing published
    assert log_tail(service.store, job.id)[-1].endswith("FAILED in predict: StageError: predict: the device was lost")
    assert service.notifier.events[-1] == (job.id, JobEvent.FAILED)


def test_a_cancel_stops_the_running_stage_and_ends_cancelled(local):
    service, worker, stages = local
    stages.hold["msa"] = threading.Event()  # never set: the stage runs until it is cancelled
    job = _submit(service)
    runner = threading.Thread(target=worker.run_now, args=(job.id,))
    runner.start()
    _wait(service, job.id, S.MSA)

    assert service.cancel(ANN, job.id).state is S.CANCELLING
    runner.join(10)
    assert service.repo.get(job.id).state is S.CANCELLED
    assert [e for _, e in service.notifier.events][-2:] == [JobEvent.CANCEL_REQUESTED, JobEvent.CANCELLED]
    assert log_tail(service.store, job.id)[-1].endswith("CANCELLED")


def test_recover_resumes_a_job_whose_msa_finished_and_fails_one_whose_msa_is_missing(local):
    service, worker, stages = local
    finished_msa, no_msa = _submit(service), _submit(service)
    stages.hold["predict"] = threading.Event()
    runner = threading.Thread(target=worker.run_now, args=(finished_msa.id,))
    runner.start()
    _wait(service, finished_msa.id, S.PREDICTING)
    worker.stop()  # a shutdown in the middle of the prediction...
    runner.join(10)
    assert service.repo.get(finished_msa.id).state is S.PREDICTING  # ...leaves the job for the next start
    for step in (S.VALIDATING, S.MSA, S.PREDICTING):
        service.repo.transition(no_msa.id, {service.repo.get(no_msa.id).state}, step)

    again = Worker(service.repo, service.store, service.notifier, worker.settings, stages=FakeStages())
    actions = again.recover()
    assert actions == {finished_msa.id: "prediction again", no_msa.id: actions[no_msa.id]}
    assert actions[no_msa.id].startswith("failed: interrupted by a restart in PREDICTING")
    again._gpu_task(finished_msa.id, True)
    assert service.repo.get(finished_msa.id).state is S.SUCCEEDED
    assert again.stages.ran == [("predict", "a"), ("predict", "b")]  # the finished MSA was not run again
    assert service.repo.get(no_msa.id).error.type == "Interrupted"


# ---------------------------------------------------------------------------------------------------------------
# The Batch stage with a fake stage runner


class _WorkArea:
    """S3WorkArea's contract in a dict of folders."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], dict[str, bytes]] = {}
        self.failures: dict[str, dict[str, Any]] = {}

    def save(self, job_id: str, slug: str, workdir: Path, last: str | None = None) -> list[str]:
        files = {p.relative_to(workdir).as_posix(): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
        self.saved[(job_id, slug)] = files
        return list(files)

    def restore(self, job_id: str, slug: str, workdir: Path) -> int:
        files = self.saved.get((job_id, slug), {})
        for name, data in files.items():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).write_bytes(data)
        return len(files)

    def record_failure(self, job_id: str, batch_job_id: str, report: dict[str, Any]) -> None:
        self.failures[batch_job_id] = report


class _NoSharedCache:
    def has(self, key: str) -> bool:
        return False

    def fetch(self, key: str, entry: Path) -> bool:
        return False

    def store(self, key: str, entry: Path) -> None:
        raise AssertionError("a cache-off MSA is not shared")

    def publish_manifest(self, databases: list[dict[str, Any]]) -> None:
        pass


@pytest.fixture
def aws(tmp_path: Path):
    repo, store = MemoryJobRepository(), MemoryArtifactStore()
    job = repo.create(Job(owner="ann", request=JobRequest.parse({"fasta": "ubq", "sequence": TWO})))
    store.put_bytes(layout.input_key(job.id), TWO.encode())
    work, stages = _WorkArea(), FakeStages()

    def stage(name: str, batch_job_id: str) -> BatchStage:
        return BatchStage(name, job.id, settings=Settings(data_dir=tmp_path / "fsx"), repo=repo, store=store,
                          work=work, msa_cache=_NoSharedCache(), stages=stages, batch_job_id=batch_job_id,
                          stop=threading.Event())

    return repo, store, work, stages, job, stage


def test_the_batch_stages_hand_the_work_dir_over_through_the_work_area_and_publish(aws):
    repo, store, work, stages, job, stage = aws
    for step in (S.VALIDATING, S.MSA):
        repo.transition(job.id, {repo.get(job.id).state}, step)
    assert stage("msa", "b-1").run() == EXIT_OK
    assert set(work.saved) == {(job.id, "a"), (job.id, "b")} and ".af2-msa-done.json" in work.saved[(job.id, "a")]
    repo.transition(job.id, {S.MSA}, S.PREDICTING)
    assert stage("predict", "b-2").run() == EXIT_OK

    done = repo.get(job.id)
    assert stages.ran == [("msa", "a"), ("msa", "b"), ("predict", "a"), ("predict", "b")]
    assert stages.warmed == [("b", 0)]  # the second record made ready before the first's prediction began
    assert done.artifacts["aws:batch:b-1"] == "msa" and done.artifacts["aws:batch:b-2"] == "predict"
    assert set(done.cost) == {"msa_s", "predict_s", "publish_s"} and done.progress.stage == "outputs"
    assert json.loads(store.get_bytes(layout.predictions_key(job.id)))["records"][1]["name"] == "b"
    log = store.get_bytes(layout.log_key(job.id)).decode()
    assert "msa: msa stage of 2 record(s), Batch job b-1" in log and "predict: published: a: best" in log


def test_a_next_record_that_cannot_be_made_ready_ahead_is_predicted_in_its_turn(aws):
    repo, store, work, stages, job, stage = aws
    for step in (S.VALIDATING, S.MSA):
        repo.transition(job.id, {repo.get(job.id).state}, step)
    assert stage("msa", "b-1").run() == EXIT_OK
    repo.transition(job.id, {S.MSA}, S.PREDICTING)
    stages.fail["warm"] = RuntimeError("the executable cache is unreadable")
    assert stage("predict", "b-2").run() == EXIT_OK
    assert stages.warmed == [("b", 0)] and stages.ran[-2:] == [("predict", "a"), ("predict", "b")]
    assert [r["name"] for r in json.loads(store.get_bytes(layout.predictions_key(job.id)))["records"]] == ["a", "b"]


def test_a_batch_stage_stops_when_its_job_leaves_the_stage_and_reports_its_own_failure(aws):
    repo, store, work, stages, job, stage = aws
    for step in (S.VALIDATING, S.MSA):
        repo.transition(job.id, {repo.get(job.id).state}, step)
    assert stage("predict", "b-0").run() == EXIT_FAILED  # the job is not PREDICTING: a conflict, reported
    assert work.failures["b-0"]["type"] == "ConflictError"
    stages.fail["msa"] = errors.StageError("jackhmmer died", stage="msa")
    assert stage("msa", "b-1").run() == EXIT_FAILED
    assert work.failures["b-1"] == {"stage": "msa", "type": "StageError", "message": "msa: jackhmmer died",
                                    "exit_code": EXIT_FAILED, "batch_job_id": "b-1"}
    del stages.fail["msa"]
    lifecycle.request_cancel(repo, job.id)
    assert stage("msa", "b-2").run() == EXIT_CANCELLED


def test_a_job_found_unfinished_by_more_restarts_than_allowed_is_failed_not_run_again(local):
    """A record that takes the whole server down would do so again at every start: after MAX_RESTARTS restarts
    the job ends FAILED, saying so."""
    from af2jobs.adapters.local.worker import MAX_RESTARTS

    service, worker, _ = local
    job = _submit(service)
    for step in (S.VALIDATING, S.MSA):
        service.repo.transition(job.id, {service.repo.get(job.id).state}, step)
    worker.stop()
    actions = []
    for _ in range(MAX_RESTARTS + 1):
        again = Worker(service.repo, service.store, service.notifier, worker.settings, stages=FakeStages())
        actions.append(again.recover()[job.id])
        again.stop()
        (worker.settings.data_dir / "worker.stopped").unlink()  # as a crash leaves it: no clean stop recorded
    assert actions[:MAX_RESTARTS] == ["MSA again"] * MAX_RESTARTS
    failed = service.repo.get(job.id)
    assert failed.state is S.FAILED and failed.error.type == "Interrupted"
    assert f"the server has now crashed {MAX_RESTARTS + 1} times while it was unfinished" in failed.error.message
    assert not (worker.root / layout.work_root(job.id)).exists()  # its work dir went with it


def test_a_clean_stop_is_no_crash_and_does_not_count_towards_the_restart_limit(local):
    from af2jobs.adapters.local.worker import MAX_RESTARTS

    service, worker, _ = local
    job = _submit(service)
    for step in (S.VALIDATING, S.MSA):
        service.repo.transition(job.id, {service.repo.get(job.id).state}, step)
    worker.stop()
    for _ in range(MAX_RESTARTS + 2):  # routine restarts: each stop() is recorded as clean
        again = Worker(service.repo, service.store, service.notifier, worker.settings, stages=FakeStages())
        assert again.recover()[job.id] == "MSA again"
        again.stop()
    assert service.repo.get(job.id).state is S.MSA
