"""SqliteJobRepository and SqliteApiKeyStore on a real file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from af2jobs import errors
from af2jobs.adapters.local.sqlite import SqliteApiKeyStore, SqliteJobRepository
from af2jobs.models import Job, JobError, JobRequest, JobState, Principal, Progress

S = JobState
REQUEST = JobRequest.parse({"fasta": "job1", "sequence": "MKTAYIAKQRQISFVKSHFSRQ"})


def make_job(owner: str = "ann", **fields: object) -> Job:
    return Job(owner=owner, request=REQUEST, **fields)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[SqliteJobRepository]:
    r = SqliteJobRepository(tmp_path / "state" / "jobs.db")
    yield r
    r.close()


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[SqliteApiKeyStore]:
    k = SqliteApiKeyStore(tmp_path / "keys.db")
    yield k
    k.close()


def all_pages(repo: SqliteJobRepository, owner: str | None, limit: int, **kw: object) -> list[list[Job]]:
    pages, token = [], None
    while True:
        page, token = repo.list(owner, limit=limit, token=token, **kw)  # type: ignore[arg-type]
        pages.append(page)
        if token is None:
            return pages


# --------------------------------------------------------------------------------------------------------------
# CRUD


def test_create_then_get_round_trips_every_field(repo: SqliteJobRepository) -> None:
    job = make_job(artifacts={"input.fasta": "jobs/x/input.fasta"}, cost={"usd": 1.5}, idempotency_key="k")
    assert repo.create(job) == job
    assert repo.get(job.id) == job


def test_get_missing_is_not_found(repo: SqliteJobRepository) -> None:
    with pytest.raises(errors.NotFoundError):
        repo.get("0" * 32)


def test_create_same_id_twice_conflicts(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError):
        repo.create(job)


def test_schema_survives_reopen_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqliteJobRepository(path)
    job = first.create(make_job())
    first.close()
    second = SqliteJobRepository(path)
    assert second.get(job.id) == job
    second.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_delete_only_when_terminal(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError):
        repo.delete(job.id)
    assert repo.get(job.id).state is S.QUEUED
    repo.transition(job.id, {S.QUEUED}, S.CANCELLED)
    repo.delete(job.id)
    with pytest.raises(errors.NotFoundError):
        repo.get(job.id)
    with pytest.raises(errors.NotFoundError):
        repo.delete(job.id)


# --------------------------------------------------------------------------------------------------------------
# Listing


def test_pagination_over_120_jobs_loses_and_repeats_nothing(repo: SqliteJobRepository) -> None:
    # Forty of them share one timestamp, so the id tie-break is exercised too.
    jobs = [make_job(created_at="2024-01-01T00:00:00.000000+00:00") for _ in range(40)]
    jobs += [make_job() for _ in range(80)]
    for job in jobs:
        repo.create(job)
    pages = all_pages(repo, "ann", limit=7)
    seen = [j.id for page in pages for j in page]
    assert len(pages) == 18 and all(len(p) == 7 for p in pages[:-1]) and len(pages[-1]) == 1
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == {j.id for j in jobs}
    keys = [(j.created_at, j.id) for page in pages for j in page]
    assert keys == sorted(keys, reverse=True)  # newest first


def test_pagination_is_stable_under_inserts_between_pages(repo: SqliteJobRepository) -> None:
    before = [repo.create(make_job()) for _ in range(30)]
    page, token = repo.list("ann", limit=10)
    newer = [repo.create(make_job()) for _ in range(15)]  # arrive while the client pages
    seen = [j.id for j in page]
    while token is not None:
        page, token = repo.list("ann", limit=10, token=token)
        seen += [j.id for j in page]
    assert len(seen) == len(set(seen))
    assert set(seen) == {j.id for j in before}
    assert not set(seen) & {j.id for j in newer}


def test_list_filters_by_owner_and_state(repo: SqliteJobRepository) -> None:
    ann = [repo.create(make_job("ann")) for _ in range(4)]
    bob = [repo.create(make_job("bob")) for _ in range(3)]
    repo.transition(ann[0].id, {S.QUEUED}, S.VALIDATING)
    repo.transition(ann[1].id, {S.QUEUED}, S.CANCELLED)
    repo.transition(bob[0].id, {S.QUEUED}, S.FAILED)

    def ids(owner: str | None, state: object = None) -> set[str]:
        return {j.id for j in repo.list(owner, state=state, limit=100)[0]}  # type: ignore[arg-type]

    assert ids("ann") == {j.id for j in ann}
    assert ids(None) == {j.id for j in ann + bob}
    assert ids("ann", S.QUEUED) == {ann[2].id, ann[3].id}
    assert ids(None, {S.CANCELLED, S.FAILED}) == {ann[1].id, bob[0].id}
    assert ids("bob", S.VALIDATING) == set()
    assert ids("nobody") == set()


@pytest.mark.parametrize("token", ["not-base64!", "bm90IGpzb24", "WzEsMl0"])  # garbage, "not json", [1,2]
def test_bad_token_is_a_validation_error(repo: SqliteJobRepository, token: str) -> None:
    with pytest.raises(errors.ValidationError) as info:
        repo.list(None, token=token)
    assert info.value.field == "token"


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_bad_limit_is_a_validation_error(repo: SqliteJobRepository, limit: int) -> None:
    with pytest.raises(errors.ValidationError):
        repo.list(None, limit=limit)


# --------------------------------------------------------------------------------------------------------------
# Transitions and updates


def test_transition_moves_records_phases_and_bumps_version(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    moved = repo.transition(job.id, {S.QUEUED}, S.VALIDATING, progress=Progress(stage="validate"))
    assert moved.state is S.VALIDATING and moved.version == 2
    assert moved.progress == Progress(stage="validate")
    assert moved.phases["QUEUED"].ended_at == moved.phases["VALIDATING"].started_at == moved.updated_at
    assert moved.phases["VALIDATING"].ended_at is None
    failed = repo.transition(job.id, {S.VALIDATING}, S.FAILED, error=JobError(type="StageError", message="x"))
    assert failed.phases["VALIDATING"].ended_at is not None
    assert failed.phases["FAILED"].started_at == failed.phases["FAILED"].ended_at  # terminal: over at once
    assert repo.get(job.id) == failed and failed.version == 3


def test_transition_from_an_unexpected_state_conflicts_and_changes_nothing(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError, match="is QUEUED"):
        repo.transition(job.id, {S.MSA}, S.PREDICTING)
    assert repo.get(job.id) == job


def test_transition_outside_the_graph_is_a_caller_bug(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(ValueError):
        repo.transition(job.id, {S.QUEUED}, S.SUCCEEDED)
    with pytest.raises(ValueError):
        repo.transition(job.id, set(), S.FAILED)


def test_transition_of_a_missing_job_is_not_found(repo: SqliteJobRepository) -> None:
    with pytest.raises(errors.NotFoundError):
        repo.transition("0" * 32, {S.QUEUED}, S.VALIDATING)


def test_eight_threads_race_for_one_move_and_exactly_one_wins(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            repo.transition(job.id, {S.QUEUED}, S.VALIDATING, progress=Progress(stage=f"worker-{n}"))
            result = "won"
        except errors.ConflictError:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    final = repo.get(job.id)
    assert final.state is S.VALIDATING and final.version == 2


def test_update_merges_artifacts_and_keeps_the_state(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job(artifacts={"input.fasta": "jobs/a/input.fasta"}))
    repo.update(job.id, artifacts={"ranked_0.pdb": "jobs/a/ranked_0.pdb"})
    updated = repo.update(job.id, progress={"stage": "MSA", "step": 1, "total": 3}, cost={"usd": 0.1})
    assert updated.state is S.QUEUED and updated.version == 3
    assert updated.artifacts == {"input.fasta": "jobs/a/input.fasta", "ranked_0.pdb": "jobs/a/ranked_0.pdb"}
    assert updated.progress == Progress(stage="MSA", step=1, total=3)
    assert repo.get(job.id) == updated


def test_update_is_conditional_when_asked(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError):
        repo.update(job.id, expected_from={S.PREDICTING}, progress={"stage": "predict"})
    assert repo.get(job.id).progress is None


def test_update_refuses_fixed_fields(repo: SqliteJobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(TypeError):
        repo.update(job.id, owner="mallory")
    with pytest.raises(TypeError):
        repo.transition(job.id, {S.QUEUED}, S.VALIDATING, state=S.SUCCEEDED)
    assert repo.get(job.id) == job


# --------------------------------------------------------------------------------------------------------------
# Idempotency


def test_repeated_idempotency_key_returns_the_first_job(repo: SqliteJobRepository) -> None:
    first = repo.create(make_job(idempotency_key="abc"))
    again = repo.create(make_job(idempotency_key="abc"))
    assert again == first
    other_owner = repo.create(make_job("bob", idempotency_key="abc"))
    assert other_owner.id != first.id
    assert len(repo.list(None)[0]) == 2


def test_jobs_without_a_key_never_collide(repo: SqliteJobRepository) -> None:
    a, b = repo.create(make_job()), repo.create(make_job())
    assert a.id != b.id and len(repo.list("ann")[0]) == 2


def test_concurrent_creates_with_one_key_make_one_job(repo: SqliteJobRepository) -> None:
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def create() -> None:
        barrier.wait()
        ids.append(repo.create(make_job(idempotency_key="same")).id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert len(repo.list("ann")[0]) == 1


# --------------------------------------------------------------------------------------------------------------
# API keys


def test_key_verifies_to_its_principal(keys: SqliteApiKeyStore) -> None:
    user = keys.create("ann")
    admin = keys.create("root", admin=True)
    assert user.startswith("af2_") and user != admin
    assert keys.verify(user) == Principal("ann", admin=False)
    assert keys.verify(admin) == Principal("root", admin=True)


def test_wrong_or_malformed_keys_do_not_verify(keys: SqliteApiKeyStore) -> None:
    key = keys.create("ann")
    prefix, key_id, secret = key[:3], key[4:20], key[21:]
    assert prefix == "af2" and key == f"af2_{key_id}_{secret}"
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad in [f"af2_{key_id}_{flipped}", f"af2_{'0' * 16}_{secret}", key + "x", key[:-1], "", "af2_", secret]:
        assert keys.verify(bad) is None, bad
    assert keys.verify(None) is None  # type: ignore[arg-type]


def test_only_a_salted_hash_is_stored(tmp_path: Path, keys: SqliteApiKeyStore) -> None:
    key = keys.create("ann")
    key_id, secret = key[4:20], key[21:]  # af2_<16 hex>_<secret>
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))  # the file, its WAL and shm
    assert key_id.encode() in stored  # the row really is in these bytes
    assert key.encode() not in stored
    assert secret.encode() not in stored
    rows = sqlite3.connect(tmp_path / "keys.db").execute("SELECT salt, hash FROM api_keys").fetchall()
    assert len(rows) == 1 and len(rows[0][0]) == 16 and len(rows[0][1]) == 32


def test_same_owner_keys_get_different_salts(tmp_path: Path, keys: SqliteApiKeyStore) -> None:
    keys.create("ann")
    keys.create("ann")
    salts = {r[0] for r in sqlite3.connect(tmp_path / "keys.db").execute("SELECT salt FROM api_keys")}
    assert len(salts) == 2


def test_list_and_revoke(keys: SqliteApiKeyStore) -> None:
    key = keys.create("ann")
    keys.create("bob")
    infos = keys.list("ann")
    assert [(i.owner, i.admin, i.revoked_at) for i in infos] == [("ann", False, None)]
    assert key[4:20] == infos[0].key_id and key not in repr(infos)
    keys.revoke(infos[0].key_id)
    keys.revoke(infos[0].key_id)  # idempotent
    assert keys.verify(key) is None
    assert keys.list("ann")[0].revoked_at is not None
    assert len(keys.list()) == 2
    with pytest.raises(errors.NotFoundError):
        keys.revoke("f" * 16)


@pytest.mark.parametrize("owner", ["", "a\nb", "x" * 201])
def test_bad_owner_is_refused(keys: SqliteApiKeyStore, owner: str) -> None:
    with pytest.raises(errors.ValidationError):
        keys.create(owner)
