"""JobService on the real SQLite repository and directory store, with recording fakes for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from af2jobs import errors
from af2jobs.adapters.local.files import DirectoryArtifactStore
from af2jobs.adapters.local.sqlite import SqliteJobRepository
from af2jobs.models import Job, JobEvent, JobState, Principal
from af2jobs.request import JobRequest
from af2jobs.service import JobService
from af2jobs.settings import Settings
from tests.fakes import RecordingNotifier, RecordingOrchestrator

S = JobState
SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
ANN = Principal("ann")
BOB = Principal("bob")
ADMIN = Principal("root", admin=True)


@dataclass
class World:
    service: JobService
    repo: SqliteJobRepository
    store: DirectoryArtifactStore
    orchestrator: RecordingOrchestrator
    notifier: RecordingNotifier


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    repo = SqliteJobRepository(tmp_path / "jobs.db")
    store = DirectoryArtifactStore(tmp_path / "store")
    orch, notifier = RecordingOrchestrator(), RecordingNotifier()
    settings = Settings(data_dir=tmp_path, max_length=1200)
    yield World(JobService(repo, store, orch, notifier, settings), repo, store, orch, notifier)
    repo.close()


def req(**fields: object) -> JobRequest:
    return JobRequest.parse({"fasta": "job1", "sequence": SEQ, **fields})


def nothing_stored(w: World) -> bool:
    return w.repo.list(None)[0] == [] and w.store.list("jobs/") == [] and w.orchestrator.started == []


def run_to(w: World, job: Job, *path: JobState) -> Job:
    """Move a job along `path` as the pipeline would."""
    current = job
    for state in path:
        current = w.repo.transition(job.id, {current.state}, state)
    return current


# --------------------------------------------------------------------------------------------------------------
# submit


def test_submit_stores_input_queues_and_starts(w: World) -> None:
    job = w.service.submit(ANN, req())
    assert job.state is S.QUEUED and job.owner == "ann"
    assert w.repo.get(job.id) == job
    assert w.orchestrator.started == [job.id]
    assert w.notifier.events == [(job.id, JobEvent.SUBMITTED)]
    assert job.artifacts == {"input.fasta": f"jobs/{job.id}/input.fasta"}
    # A bare sequence is stored as canonical FASTA named after the job.
    assert w.store.get_bytes(f"jobs/{job.id}/input.fasta") == f">job1\n{SEQ}\n".encode()


def test_submit_resolves_the_auto_queue_from_the_longest_record(w: World) -> None:
    text = f">short\n{SEQ}\n>long\n{'A' * 450}\n"
    assert w.service.submit(ANN, req(sequence=text)).request.que == "mid"
    assert w.service.submit(ANN, req(que="p4")).request.que == "p4"
    assert w.service.submit(ANN, req()).request.que == "low"


def test_submit_reads_an_uploaded_file(w: World) -> None:
    w.store.put_bytes("input/ann/lab/t1.fasta", f">t1 my protein\r\n{SEQ.lower()}\r\n".encode())
    job = w.service.submit(ANN, req(sequence=None, file_name="lab/t1.fasta"))
    assert w.store.get_bytes(f"jobs/{job.id}/input.fasta") == f">t1 my protein\n{SEQ}\n".encode()


def test_submit_of_a_missing_upload_is_not_found_and_stores_nothing(w: World) -> None:
    with pytest.raises(errors.NotFoundError):
        w.service.submit(ANN, req(sequence=None, file_name="nope.fasta"))
    assert nothing_stored(w)


@pytest.mark.parametrize(
    "bad",
    [f"{SEQ}B", f">a\n{SEQ}\n>a\n{SEQ}\n", "MKT", f">x\n{'A' * 1201}\n", f"{SEQ}\n>b\n{SEQ}"],
    ids=["ambiguous-residue", "duplicate-name", "too-short", "over-settings-max", "sequence-before-header"],
)
def test_bad_fasta_raises_before_anything_is_stored(w: World, bad: str) -> None:
    with pytest.raises(errors.FastaError):
        w.service.submit(ANN, req(sequence=bad))
    assert nothing_stored(w)
    assert w.notifier.events == []


def test_bad_uploaded_fasta_stores_nothing(w: World) -> None:
    w.store.put_bytes("input/ann/bad.fasta", b"\x1f\x8b\x08\x00gzip")
    with pytest.raises(errors.FastaError):
        w.service.submit(ANN, req(sequence=None, file_name="bad.fasta"))
    assert nothing_stored(w)


def test_idempotent_submit_returns_the_first_job_and_starts_once(w: World) -> None:
    first = w.service.submit(ANN, req(), idempotency_key="k1")
    again = w.service.submit(ANN, req(), idempotency_key="k1")
    assert again.id == first.id
    assert w.orchestrator.started == [first.id]
    assert w.store.list("jobs/") == [f"jobs/{first.id}/input.fasta"]  # the repeat's input was removed
    assert w.service.submit(BOB, req(), idempotency_key="k1").id != first.id  # keys are per owner


def test_idempotency_key_reused_for_another_request_conflicts(w: World) -> None:
    first = w.service.submit(ANN, req(), idempotency_key="k1")
    with pytest.raises(errors.ConflictError):
        w.service.submit(ANN, req(gpu=2), idempotency_key="k1")
    assert [j.id for j in w.repo.list(None)[0]] == [first.id]
    assert w.store.list("jobs/") == [f"jobs/{first.id}/input.fasta"]


def test_a_failed_start_marks_the_job_failed(w: World) -> None:
    w.orchestrator.fail_start = True
    with pytest.raises(RuntimeError, match="no capacity"):
        w.service.submit(ANN, req())
    (job,), _ = w.repo.list("ann")
    assert job.state is S.FAILED
    assert job.error is not None and job.error.type == "RuntimeError" and "no capacity" in job.error.message


def test_a_broken_notifier_does_not_fail_the_submit(w: World) -> None:
    w.notifier.broken = True
    job = w.service.submit(ANN, req())
    assert w.repo.get(job.id).state is S.QUEUED and w.orchestrator.started == [job.id]


# --------------------------------------------------------------------------------------------------------------
# get / list


def test_other_owners_job_is_not_found_but_admin_sees_it(w: World) -> None:
    job = w.service.submit(ANN, req())
    assert w.service.get(ANN, job.id) == job
    with pytest.raises(errors.NotFoundError):
        w.service.get(BOB, job.id)
    assert w.service.get(ADMIN, job.id) == job
    with pytest.raises(errors.NotFoundError):
        w.service.get(ANN, "0" * 32)


def test_list_is_scoped_to_the_owner_and_admin_sees_all(w: World) -> None:
    ann = {w.service.submit(ANN, req()).id for _ in range(3)}
    bob = {w.service.submit(BOB, req()).id for _ in range(2)}
    assert {j.id for j in w.service.list(ANN)[0]} == ann
    assert {j.id for j in w.service.list(BOB)[0]} == bob
    assert {j.id for j in w.service.list(ADMIN)[0]} == ann | bob
    page, token = w.service.list(ANN, limit=2)
    rest, end = w.service.list(ANN, limit=2, token=token)
    assert len(page) == 2 and len(rest) == 1 and end is None
    assert w.service.list(ANN, state=S.CANCELLED)[0] == []


# --------------------------------------------------------------------------------------------------------------
# cancel


def test_cancel_queued_job_is_immediate(w: World) -> None:
    job = w.service.submit(ANN, req())
    cancelled = w.service.cancel(ANN, job.id)
    assert cancelled.state is S.CANCELLED and w.repo.get(job.id).state is S.CANCELLED
    assert w.orchestrator.cancelled == []
    assert (job.id, JobEvent.CANCELLED) in w.notifier.events


@pytest.mark.parametrize("path", [[S.VALIDATING], [S.VALIDATING, S.MSA], [S.VALIDATING, S.MSA, S.PREDICTING]])
def test_cancel_running_job_asks_the_orchestrator(w: World, path: list[JobState]) -> None:
    job = run_to(w, w.service.submit(ANN, req()), *path)
    cancelling = w.service.cancel(ANN, job.id)
    assert cancelling.state is S.CANCELLING and w.repo.get(job.id).state is S.CANCELLING
    assert w.orchestrator.cancelled == [job.id]
    # Asking again is safe and asks the orchestrator again.
    assert w.service.cancel(ANN, job.id).state is S.CANCELLING
    assert w.orchestrator.cancelled == [job.id, job.id]


@pytest.mark.parametrize("end", [[S.CANCELLED], [S.FAILED], [S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED]])
def test_cancel_finished_job_conflicts(w: World, end: list[JobState]) -> None:
    job = run_to(w, w.service.submit(ANN, req()), *end)
    with pytest.raises(errors.ConflictError):
        w.service.cancel(ANN, job.id)
    assert w.repo.get(job.id).state is end[-1] and w.orchestrator.cancelled == []


def test_cannot_cancel_another_owners_job(w: World) -> None:
    job = w.service.submit(ANN, req())
    with pytest.raises(errors.NotFoundError):
        w.service.cancel(BOB, job.id)
    assert w.repo.get(job.id).state is S.QUEUED
    assert w.service.cancel(ADMIN, job.id).state is S.CANCELLED


def test_cancel_all_cancels_only_the_callers_unfinished_jobs(w: World) -> None:
    queued = w.service.submit(ANN, req())
    running = run_to(w, w.service.submit(ANN, req()), S.VALIDATING, S.MSA)
    done = run_to(w, w.service.submit(ANN, req()), S.FAILED)
    bobs = w.service.submit(BOB, req())
    result = {j.id: j.state for j in w.service.cancel_all(ANN)}
    assert result == {queued.id: S.CANCELLED, running.id: S.CANCELLING}
    assert w.repo.get(done.id).state is S.FAILED and w.repo.get(bobs.id).state is S.QUEUED
    with pytest.raises(errors.ForbiddenError):
        w.service.cancel_all(ANN, everyone=True)
    assert {j.id for j in w.service.cancel_all(ADMIN, everyone=True)} == {running.id, bobs.id}


# --------------------------------------------------------------------------------------------------------------
# delete


@pytest.mark.parametrize("path", [[], [S.VALIDATING], [S.VALIDATING, S.CANCELLING]])
def test_delete_of_an_unfinished_job_is_409_and_keeps_everything(w: World, path: list[JobState]) -> None:
    job = run_to(w, w.service.submit(ANN, req()), *path)
    with pytest.raises(errors.ConflictError) as info:
        w.service.delete(ANN, job.id)
    assert info.value.http_status == 409
    assert w.repo.get(job.id).state is (path[-1] if path else S.QUEUED)
    assert w.store.list(f"jobs/{job.id}/") == [f"jobs/{job.id}/input.fasta"]


def test_delete_of_a_finished_job_removes_files_then_record(w: World) -> None:
    job = run_to(w, w.service.submit(ANN, req()), S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED)
    other = w.service.submit(ANN, req())
    w.store.put_bytes(f"jobs/{job.id}/ranked_0.pdb", b"ATOM")
    w.store.put_bytes("input/kept.fasta", b">k\n")
    w.service.delete(ANN, job.id)
    with pytest.raises(errors.NotFoundError):
        w.repo.get(job.id)
    assert w.store.list(f"jobs/{job.id}/") == []
    assert w.store.list("") == ["input/kept.fasta", f"jobs/{other.id}/input.fasta"]


def test_cannot_delete_another_owners_job(w: World) -> None:
    job = run_to(w, w.service.submit(ANN, req()), S.FAILED)
    with pytest.raises(errors.NotFoundError):
        w.service.delete(BOB, job.id)
    assert w.repo.get(job.id).state is S.FAILED


def test_delete_finished_removes_only_finished_jobs(w: World) -> None:
    done = [run_to(w, w.service.submit(ANN, req()), end) for end in (S.FAILED, S.CANCELLED)]
    live = w.service.submit(ANN, req())
    bobs = run_to(w, w.service.submit(BOB, req()), S.FAILED)
    assert sorted(w.service.delete_finished(ANN)) == sorted(j.id for j in done)
    assert [j.id for j in w.repo.list(None)[0]] == [bobs.id, live.id]
    assert w.store.list("jobs/") == sorted([f"jobs/{live.id}/input.fasta", f"jobs/{bobs.id}/input.fasta"])
    with pytest.raises(errors.ForbiddenError):
        w.service.delete_finished(BOB, everyone=True)
    assert w.service.delete_finished(ADMIN, everyone=True) == [bobs.id]


# --------------------------------------------------------------------------------------------------------------
# MSAs a request brings

OWN_MSA = f">q\n{SEQ}\n>h\n{SEQ[:5]}-{SEQ[6:]}\n"


def test_a_supplied_msa_is_checked_and_kept_with_the_jobs_files_not_on_its_record(w: World) -> None:
    w.store.put_bytes("input/ann/big.sto", f"# STOCKHOLM 1.0\nq {SEQ}\n//\n".encode())
    two = f">first\n{SEQ}\n>second\n{SEQ}\n"
    job = w.service.submit(ANN, req(sequence=two, msa={"first": OWN_MSA}, msa_file_names={"second": "big.sto"}))
    assert job.request.msa is None and job.request.msa_file_names == {"second": "big.sto"}
    assert w.store.get_bytes(job.artifacts["supplied/first.a3m"]).decode() == OWN_MSA
    assert w.store.get_bytes(job.artifacts["supplied/second.sto"]).startswith(b"# STOCKHOLM")
    assert job.artifacts["supplied/first.a3m"] == f"jobs/{job.id}/supplied/first.a3m"


@pytest.mark.parametrize(("fields", "field", "says"), [
    ({"msa": {"job1": f">q\n{SEQ[1:]}\n"}}, "msa.job1", "msa for record 'job1', line 1: the first row"),
    ({"msa": {"nope": OWN_MSA}}, "msa.nope", "msa names record nope, which the input does not have"),
    ({"msa_file_names": {"job1": "absent.a3m"}}, "msa_file_names.job1", "no object input/ann/absent.a3m"),
])
def test_a_bad_supplied_msa_stores_nothing(w: World, fields: dict, field: str, says: str) -> None:
    with pytest.raises(errors.Af2JobsError) as info:
        w.service.submit(ANN, req(**fields))
    assert info.value.field == field and says in info.value.message, info.value.message
    assert nothing_stored(w)
