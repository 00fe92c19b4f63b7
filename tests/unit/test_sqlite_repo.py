"""What only the SQLite stores do (the shared behaviour of every JobRepository and ApiKeyStore is in
tests/functional/test_repository_contract.py): the file survives a reopen in WAL mode, keys are salted hashes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from af2jobs.adapters.local.sqlite import SqliteApiKeyStore, SqliteJobRepository
from af2jobs.models import Job
from af2jobs.request import JobRequest

REQUEST = JobRequest.parse({"fasta": "job1", "sequence": "MKTAYIAKQRQISFVKSHFSRQ"})


def make_job(owner: str = "ann", **fields: object) -> Job:
    return Job(owner=owner, request=REQUEST, **fields)


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[SqliteApiKeyStore]:
    k = SqliteApiKeyStore(tmp_path / "keys.db")
    yield k
    k.close()


# --------------------------------------------------------------------------------------------------------------
# Jobs


def test_schema_survives_reopen_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqliteJobRepository(path)
    job = first.create(make_job())
    first.close()
    second = SqliteJobRepository(path)
    assert second.get(job.id) == job
    second.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --------------------------------------------------------------------------------------------------------------
# API keys


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




def test_a_thread_that_ended_does_not_keep_its_connection_open(tmp_path: Path) -> None:
    """Each job's short-lived helper thread writes progress: connections must not pile up over jobs."""
    import threading

    repo = SqliteJobRepository(tmp_path / "jobs.sqlite3")
    job = repo.create(make_job())
    for _ in range(30):
        t = threading.Thread(target=lambda: repo.get(job.id))
        t.start()
        t.join()
    repo.get(job.id)  # this thread's connection; the ended threads' ones are closed by now
    assert repo._db.open_connections() <= 2
