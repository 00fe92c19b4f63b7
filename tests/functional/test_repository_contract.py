"""One behaviour, every back end: each test here runs on the local adapter and on its AWS twin (under moto), so
the platform behaves the same on one machine and on AWS, and on the in-memory fakes that other tests stand on.

Job repositories: SqliteJobRepository | DynamoJobRepository | MemoryJobRepository. Key stores: SqliteApiKeyStore |
DynamoApiKeyStore. Artifact stores: DirectoryArtifactStore | S3ArtifactStore | MemoryArtifactStore.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from af2jobs import errors
from af2jobs.adapters.local.files import DirectoryArtifactStore
from af2jobs.adapters.local.sqlite import SqliteApiKeyStore, SqliteJobRepository
from af2jobs.models import RUNNING, Job, JobError, JobState, Principal, Progress
from af2jobs.request import JobRequest
from af2jobs.ports import ApiKeyStore, ArtifactStore, JobRepository
from tests.fakes import MemoryArtifactStore, MemoryJobRepository
from tests.functional import moto_support

S = JobState
REQUEST = JobRequest.parse({"fasta": "job1", "sequence": "MKTAYIAKQRQISFVKSHFSRQ"})


def make_job(owner: str = "ann", **fields: Any) -> Job:
    return Job(owner=owner, request=REQUEST, **fields)


@pytest.fixture(params=["sqlite", "dynamodb", "memory"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobRepository]:
    if request.param == "memory":
        yield MemoryJobRepository()
    elif request.param == "sqlite":
        local = SqliteJobRepository(tmp_path / "jobs.db")
        yield local
        local.close()
    else:
        with moto_support.moto_aws(monkeypatch):
            yield moto_support.jobs_repo()


@pytest.fixture(params=["sqlite", "dynamodb"])
def keys(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiKeyStore]:
    if request.param == "sqlite":
        local = SqliteApiKeyStore(tmp_path / "keys.db")
        yield local
        local.close()
    else:
        with moto_support.moto_aws(monkeypatch):
            yield moto_support.key_store()


@pytest.fixture(params=["directory", "s3", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArtifactStore]:
    if request.param == "memory":
        yield MemoryArtifactStore()
    elif request.param == "directory":
        yield DirectoryArtifactStore(tmp_path / "store")
    else:
        with moto_support.moto_aws(monkeypatch):
            yield moto_support.artifact_store()


def all_pages(repo: JobRepository, owner: str | None, limit: int, **kw: Any) -> list[list[Job]]:
    pages, token = [], None
    while True:
        page, token = repo.list(owner, limit=limit, token=token, **kw)
        pages.append(page)
        if token is None:
            return pages


def race(n: int, attempt: Callable[[int], str]) -> list[str]:
    """Run attempt(0..n-1) in n threads released together; their results, sorted."""
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        result = attempt(i)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


# ==============================================================================================================
# Job repositories: CRUD


def test_create_then_get_round_trips_every_field(repo: JobRepository) -> None:
    job = make_job(
        artifacts={"input.fasta": "jobs/x/input.fasta"},
        cost={"usd": 1.5, "gpu_s": 12, "detail": {"queue": "mid"}},
        idempotency_key="k",
        progress=Progress(stage="msa", step=1, total=3, message="jackhmmer"),
    )
    assert repo.create(job) == job
    assert repo.get(job.id) == job


def test_no_cost_and_empty_cost_stay_distinct(repo: JobRepository) -> None:
    none, empty = repo.create(make_job()), repo.create(make_job(cost={}))
    assert repo.get(none.id).cost is None
    assert repo.get(empty.id).cost == {}


def test_get_missing_is_not_found(repo: JobRepository) -> None:
    with pytest.raises(errors.NotFoundError):
        repo.get("0" * 32)


def test_create_same_id_twice_conflicts(repo: JobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError):
        repo.create(job)


def test_delete_only_when_terminal(repo: JobRepository) -> None:
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


# ==============================================================================================================
# Job repositories: listing


def test_pagination_over_120_jobs_loses_and_repeats_nothing(repo: JobRepository) -> None:
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
    order = [(j.created_at, j.id) for page in pages for j in page]
    assert order == sorted(order, reverse=True)  # newest first
    assert [j.id for j in all_pages(repo, None, limit=50)[0]] == seen[:50]  # the admin listing agrees


def test_pagination_is_stable_under_inserts_between_pages(repo: JobRepository) -> None:
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


def test_state_filter_pages_through_many_non_matching_jobs(repo: JobRepository) -> None:
    # Matches are sparse, so a page of 2 must read past many others (DynamoDB filters after its Limit).
    jobs = [repo.create(make_job()) for _ in range(30)]
    wanted = {jobs[i].id for i in (1, 9, 17, 28)}
    for job_id in wanted:
        repo.transition(job_id, {S.QUEUED}, S.CANCELLED)
    pages = all_pages(repo, None, limit=2, state=S.CANCELLED)
    assert [len(p) for p in pages] == [2, 2]
    assert {j.id for p in pages for j in p} == wanted


def test_list_filters_by_owner_and_state(repo: JobRepository) -> None:
    ann = [repo.create(make_job("ann")) for _ in range(4)]
    bob = [repo.create(make_job("bob")) for _ in range(3)]
    repo.transition(ann[0].id, {S.QUEUED}, S.VALIDATING)
    repo.transition(ann[1].id, {S.QUEUED}, S.CANCELLED)
    repo.transition(bob[0].id, {S.QUEUED}, S.FAILED)

    def ids(owner: str | None, state: Any = None) -> set[str]:
        return {j.id for j in repo.list(owner, state=state, limit=100)[0]}

    assert ids("ann") == {j.id for j in ann}
    assert ids(None) == {j.id for j in ann + bob}
    assert ids("ann", S.QUEUED) == {ann[2].id, ann[3].id}
    assert ids(None, {S.CANCELLED, S.FAILED}) == {ann[1].id, bob[0].id}
    assert ids("bob", S.VALIDATING) == set()
    assert ids("nobody") == set()


@pytest.mark.parametrize("token", ["not-base64!", "bm90IGpzb24", "WzEsMl0"])  # garbage, "not json", [1,2]
def test_bad_token_is_a_validation_error(repo: JobRepository, token: str) -> None:
    with pytest.raises(errors.ValidationError) as info:
        repo.list(None, token=token)
    assert info.value.field == "token"


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_bad_limit_is_a_validation_error(repo: JobRepository, limit: int) -> None:
    with pytest.raises(errors.ValidationError):
        repo.list(None, limit=limit)


# ==============================================================================================================
# Job repositories: transitions and updates


def test_transition_moves_records_phases_and_bumps_version(repo: JobRepository) -> None:
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


def test_transition_from_one_of_several_states_ends_the_phase_it_left(repo: JobRepository) -> None:
    job = repo.create(make_job())
    repo.transition(job.id, {S.QUEUED}, S.VALIDATING)
    at_msa = repo.transition(job.id, {S.VALIDATING}, S.MSA)
    cancelling = repo.transition(job.id, RUNNING, S.CANCELLING)
    cancelled = repo.transition(job.id, {S.CANCELLING}, S.CANCELLED)
    assert cancelling.phases["MSA"].ended_at == cancelling.phases["CANCELLING"].started_at
    assert cancelling.phases["VALIDATING"] == at_msa.phases["VALIDATING"]  # earlier phases are untouched
    assert cancelled.phases["CANCELLING"].ended_at == cancelled.phases["CANCELLED"].started_at
    assert repo.get(job.id) == cancelled


def test_transition_from_an_unexpected_state_conflicts_and_changes_nothing(repo: JobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError, match="is QUEUED"):
        repo.transition(job.id, {S.MSA}, S.PREDICTING)
    assert repo.get(job.id) == job


def test_transition_outside_the_graph_is_a_caller_bug(repo: JobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(ValueError):
        repo.transition(job.id, {S.QUEUED}, S.SUCCEEDED)
    with pytest.raises(ValueError):
        repo.transition(job.id, set(), S.FAILED)


def test_transition_of_a_missing_job_is_not_found(repo: JobRepository) -> None:
    with pytest.raises(errors.NotFoundError):
        repo.transition("0" * 32, {S.QUEUED}, S.VALIDATING)
    with pytest.raises(errors.NotFoundError):
        repo.update("0" * 32, progress={"stage": "msa"})


def test_eight_threads_race_for_one_move_and_exactly_one_wins(repo: JobRepository) -> None:
    job = repo.create(make_job())

    def attempt(n: int) -> str:
        try:
            repo.transition(job.id, {S.QUEUED}, S.VALIDATING, progress=Progress(stage=f"worker-{n}"))
        except errors.ConflictError:
            return "lost"
        return f"won-{n}"

    outcomes = race(8, attempt)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 7
    final = repo.get(job.id)
    assert final.state is S.VALIDATING and final.version == 2
    assert final.progress is not None and f"won-{final.progress.stage.removeprefix('worker-')}" == winners[0]


def test_update_merges_artifacts_and_keeps_the_state(repo: JobRepository) -> None:
    job = repo.create(make_job(artifacts={"input.fasta": "jobs/a/input.fasta"}))
    repo.update(job.id, artifacts={"ranked_0.pdb": "jobs/a/ranked_0.pdb"})
    updated = repo.update(job.id, progress={"stage": "MSA", "step": 1, "total": 3}, cost={"usd": 0.1})
    assert updated.state is S.QUEUED and updated.version == 3
    assert updated.artifacts == {"input.fasta": "jobs/a/input.fasta", "ranked_0.pdb": "jobs/a/ranked_0.pdb"}
    assert updated.progress == Progress(stage="MSA", step=1, total=3)
    assert repo.get(job.id) == updated


def test_concurrent_updates_to_different_artifacts_all_survive(repo: JobRepository) -> None:
    job = repo.create(make_job())
    race(8, lambda n: repo.update(job.id, artifacts={f"model_{n}.pdb": f"jobs/x/{n}"}, cost={f"s{n}": n}).id)
    final = repo.get(job.id)
    assert final.artifacts == {f"model_{n}.pdb": f"jobs/x/{n}" for n in range(8)}
    assert final.cost == {f"s{n}": n for n in range(8)} and final.version == 9


def test_update_merges_cost_and_none_clears_it(repo: JobRepository) -> None:
    job = repo.create(make_job(cost={"usd": 1.25}))
    assert repo.update(job.id, cost={"gpu_s": 30}).cost == {"usd": 1.25, "gpu_s": 30}
    cleared = repo.update(job.id, cost=None, progress=None)
    assert cleared.cost is None and cleared.progress is None
    assert repo.update(job.id, cost={"usd": 2}).cost == {"usd": 2}


def test_update_is_conditional_when_asked(repo: JobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(errors.ConflictError):
        repo.update(job.id, expected_from={S.PREDICTING}, progress={"stage": "predict"})
    assert repo.get(job.id).progress is None
    assert repo.update(job.id, expected_from={S.QUEUED}, progress={"stage": "queue"}).progress == Progress(
        stage="queue"
    )


def test_update_refuses_fixed_fields(repo: JobRepository) -> None:
    job = repo.create(make_job())
    with pytest.raises(TypeError):
        repo.update(job.id, owner="mallory")
    with pytest.raises(TypeError):
        repo.transition(job.id, {S.QUEUED}, S.VALIDATING, state=S.SUCCEEDED)
    assert repo.get(job.id) == job


# ==============================================================================================================
# Job repositories: idempotency


def test_repeated_idempotency_key_returns_the_first_job(repo: JobRepository) -> None:
    first = repo.create(make_job(idempotency_key="abc"))
    again = repo.create(make_job(idempotency_key="abc"))
    assert again == first
    other_owner = repo.create(make_job("bob", idempotency_key="abc"))
    assert other_owner.id != first.id
    assert len(repo.list(None)[0]) == 2


def test_jobs_without_a_key_never_collide(repo: JobRepository) -> None:
    a, b = repo.create(make_job()), repo.create(make_job())
    assert a.id != b.id and len(repo.list("ann")[0]) == 2


def test_a_deleted_job_frees_its_key(repo: JobRepository) -> None:
    first = repo.create(make_job(idempotency_key="abc"))
    repo.transition(first.id, {S.QUEUED}, S.CANCELLED)
    repo.delete(first.id)
    second = repo.create(make_job(idempotency_key="abc"))
    assert second.id != first.id and repo.get(second.id) == second


def test_concurrent_creates_with_one_key_make_one_job(repo: JobRepository) -> None:
    ids = race(8, lambda _: repo.create(make_job(idempotency_key="same")).id)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [j.id for j in repo.list("ann")[0]] == ids[:1]


# ==============================================================================================================
# API key stores


def test_key_verifies_to_its_principal(keys: ApiKeyStore) -> None:
    user = keys.create("ann")
    admin = keys.create("root", admin=True)
    assert user.startswith("af2_") and user != admin
    assert keys.verify(user) == Principal("ann", admin=False)
    assert keys.verify(admin) == Principal("root", admin=True)


def test_wrong_or_malformed_keys_do_not_verify(keys: ApiKeyStore) -> None:
    key = keys.create("ann")
    key_id, secret = key[4:20], key[21:]
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad in [f"af2_{key_id}_{flipped}", f"af2_{'0' * 16}_{secret}", key + "x", key[:-1], "", "af2_", secret]:
        assert keys.verify(bad) is None, bad
    assert keys.verify(None) is None  # type: ignore[arg-type]
    assert keys.verify(key) == Principal("ann")  # the good key still works after all that


def test_list_and_revoke(keys: ApiKeyStore) -> None:
    key = keys.create("ann")
    keys.create("bob", admin=True)
    infos = keys.list("ann")
    assert [(i.owner, i.admin, i.revoked_at) for i in infos] == [("ann", False, None)]
    assert key[4:20] == infos[0].key_id and key[21:] not in repr(infos)
    keys.revoke(infos[0].key_id)
    first_revoked = keys.list("ann")[0].revoked_at
    keys.revoke(infos[0].key_id)  # idempotent: the first revocation time stays
    assert keys.verify(key) is None
    assert first_revoked is not None and keys.list("ann")[0].revoked_at == first_revoked
    assert [(i.owner, i.admin) for i in keys.list()] == [("ann", False), ("bob", True)]
    with pytest.raises(errors.NotFoundError):
        keys.revoke("f" * 16)


def test_a_key_that_verified_once_skips_scrypt_but_not_the_store(keys: ApiKeyStore, monkeypatch) -> None:
    from af2jobs import apikeys

    key = keys.create("ann")
    calls = []
    real = apikeys.hash_secret
    monkeypatch.setattr(apikeys, "hash_secret", lambda *a: calls.append(a) or real(*a))
    assert keys.verify(key) == Principal("ann") and len(calls) == 1
    assert keys.verify(key) == Principal("ann") and len(calls) == 1  # remembered: no second scrypt
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert keys.verify(flipped) is None and len(calls) == 2  # another secret for the same key id is hashed
    keys.revoke(key[4:20])
    assert keys.verify(key) is None  # the store is read every time: revocation applies at once


@pytest.mark.parametrize("owner", ["", "a\nb", "x" * 201])
def test_bad_owner_is_refused(keys: ApiKeyStore, owner: str) -> None:
    with pytest.raises(errors.ValidationError):
        keys.create(owner)
    assert keys.list() == []


def test_a_keys_email_is_kept_listed_and_routes_its_owners_mail(keys: ApiKeyStore) -> None:
    from af2jobs import apikeys

    ann = keys.create("ann", email="ann@lab.example.org")
    keys.create("ann-lab", email="ann@lab.example.org")  # one address receiving for two owners
    keys.create("bob")
    by_owner = {i.owner: i.email for i in keys.list()}
    assert by_owner == {"ann": "ann@lab.example.org", "ann-lab": "ann@lab.example.org", "bob": None}
    assert apikeys.mail_owners(keys.list(), "ann@lab.example.org") == ["ann", "ann-lab"]
    assert apikeys.mail_addresses(keys.list(), "ann") == ["ann@lab.example.org"]
    assert apikeys.mail_addresses(keys.list(), "bob") == []
    keys.revoke(ann[4:20])
    assert apikeys.mail_owners(keys.list(), "ann@lab.example.org") == ["ann-lab"]  # a revoked key routes nothing
    assert apikeys.mail_addresses(keys.list(), "ann") == []


@pytest.mark.parametrize("email", ["ann", "ann@localhost", "ann @lab.org", "a@b@c.org", "ann@lab..org",
                                   "x" * 250 + "@lab.org"])
def test_a_bad_email_is_refused_naming_it(keys: ApiKeyStore, email: str) -> None:
    with pytest.raises(errors.ValidationError, match="email must be an address") as info:
        keys.create("ann", email=email)
    assert info.value.field == "email"
    assert keys.list() == []


def test_a_key_file_from_before_emails_gains_the_column_and_keeps_its_keys(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = SqliteApiKeyStore(path)
    key = old.create("ann")
    old.close()
    with sqlite3.connect(path) as conn:  # the table as it was made before keys had an address
        conn.execute("ALTER TABLE api_keys DROP COLUMN email")
    store = SqliteApiKeyStore(path)
    assert store.verify(key) == Principal("ann") and store.list()[0].email is None
    store.create("bob", email="bob@lab.example.org")
    assert [i.email for i in store.list()] == [None, "bob@lab.example.org"]
    store.close()


# ==============================================================================================================
# Artifact stores


def fetch(url: str) -> bytes:
    """What a client downloading `url` receives (a file:// URL locally, a presigned https URL on S3)."""
    if url.startswith(("file://", "data:")):
        with urllib.request.urlopen(url) as response:  # noqa: S310 - a URL the store just made
            return response.read()
    response = requests.get(url, timeout=10)  # answered by moto
    response.raise_for_status()
    return response.content


def test_round_trip_and_overwrite(store: ArtifactStore) -> None:
    store.put_bytes("jobs/abc/out/ranked_0.pdb", b"ATOM 1")
    store.put_bytes("jobs/abc/out/ranked_0.pdb", b"ATOM 2")
    assert store.get_bytes("jobs/abc/out/ranked_0.pdb") == b"ATOM 2"
    assert store.list("jobs/abc/") == ["jobs/abc/out/ranked_0.pdb"]


def test_put_file_copies(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "local.fasta"
    src.write_bytes(b">a\nMKT\n")
    store.put_file("input/lab/a.fasta", src)
    assert store.get_bytes("input/lab/a.fasta") == b">a\nMKT\n"


def test_failed_put_file_leaves_the_old_object(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_bytes("input/a.fasta", b"old")
    with pytest.raises(FileNotFoundError):
        store.put_file("input/a.fasta", tmp_path / "missing")
    assert store.get_bytes("input/a.fasta") == b"old"
    assert store.list("input/") == ["input/a.fasta"]


def test_missing_object_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(errors.NotFoundError):
        store.get_bytes("jobs/nope/x")
    with pytest.raises(errors.NotFoundError):
        store.url("jobs/nope/x")


def test_list_uses_string_prefixes_and_sorts(store: ArtifactStore) -> None:
    for key in ["jobs/ab/x", "jobs/abc/y", "jobs/abc/sub/z", "jobs/b/w", "input/q.fasta"]:
        store.put_bytes(key, b"1")
    assert store.list("jobs/ab/") == ["jobs/ab/x"]
    assert store.list("jobs/ab") == ["jobs/ab/x", "jobs/abc/sub/z", "jobs/abc/y"]
    assert store.list("input/") == ["input/q.fasta"]
    assert store.list("") == ["input/q.fasta", "jobs/ab/x", "jobs/abc/sub/z", "jobs/abc/y", "jobs/b/w"]
    assert store.list("jobs/none/") == []


def test_url_downloads_the_object(store: ArtifactStore) -> None:
    store.put_bytes("jobs/abc/report.html", b"<html/>")
    assert fetch(store.url("jobs/abc/report.html", expires_s=60)) == b"<html/>"


BAD_KEYS = [
    "/etc/passwd",
    "../outside",
    "jobs/../../outside",
    "jobs/abc/../../../outside",
    "input/..",
    "jobs/./abc",
    "jobs//abc",
    "jobs\\abc\\x",
    "input/a\x00b",
    "input/a\nb",
    "",
    "other/x",
    "jobs",
    "jobs/abc/.tmp-x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected_everywhere(store: ArtifactStore, key: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    calls = (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_file(key, src),
        lambda: store.get_bytes(key),
        lambda: store.url(key),
    )
    for call in calls:
        with pytest.raises(errors.ValidationError):
            call()
    assert store.list("") == []


def test_delete_prefix_removes_exactly_one_job(store: ArtifactStore) -> None:
    store.put_bytes("jobs/abc/input.fasta", b"1")
    store.put_bytes("jobs/abc/out/ranked_0.pdb", b"2")
    store.put_bytes("jobs/abcd/input.fasta", b"3")  # shares the prefix "abc"
    store.put_bytes("jobs/ab/input.fasta", b"4")
    store.put_bytes("input/abc", b"5")
    assert store.delete_prefix("abc") == 2
    assert store.list("") == ["input/abc", "jobs/ab/input.fasta", "jobs/abcd/input.fasta"]
    assert store.delete_prefix("abc") == 0  # already gone: nothing to do


@pytest.mark.parametrize("job_id", ["", "..", "../x", "a/b", ".", "a\x00"])
def test_delete_prefix_refuses_odd_ids(store: ArtifactStore, job_id: str) -> None:
    store.put_bytes("jobs/a/x", b"1")
    with pytest.raises(errors.ValidationError):
        store.delete_prefix(job_id)
    assert store.list("") == ["jobs/a/x"]
