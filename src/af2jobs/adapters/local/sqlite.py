"""Job records and API keys in one SQLite file: the local JobRepository and ApiKeyStore.

Every write is a `BEGIN IMMEDIATE` transaction (it takes the write lock before reading), so read-check-write is
atomic across threads and processes; WAL mode lets readers carry on meanwhile.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from af2jobs import apikeys, errors
from af2jobs.models import TERMINAL, Job, JobState, Principal, utc_now
from af2jobs.ports import ApiKeyInfo, StateFilter
from af2jobs.adapters.records import (
    changed, check_limit, decode_token, encode_token, expected_states, move_conflict, states_of,
)

BUSY_TIMEOUT_MS = 10_000


class _SqliteFile:
    """One connection per thread to one database file, and the write transaction both stores use."""

    def __init__(self, path: str | Path, schema: list[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []  # (the thread it serves, connection)
        self._lock = threading.Lock()
        # This process's writers queue here rather than in SQLite's busy handler, whose sleeps (up to 100 ms each)
        # were the slowest submissions under load; other processes still wait through busy_timeout.
        self._writer = threading.Lock()
        # WAL is a property of the file: set it once, outside any transaction.
        self._conn().execute("PRAGMA journal_mode=WAL")
        with self.write() as conn:
            for statement in schema:
                conn.execute(statement)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
            # check_same_thread=False only so that close() may close other threads' connections: a connection is
            # otherwise used by the thread that opened it alone.
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps the file consistent
            self._local.conn = conn
            with self._lock:
                # A thread that ended (a job's short-lived helper thread) does not keep its connection open.
                alive = []
                for thread, other in self._all:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                self._all = [*alive, (threading.current_thread(), conn)]
        return conn

    def open_connections(self) -> int:
        with self._lock:
            return len(self._all)

    def read(self) -> sqlite3.Connection:
        return self._conn()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection; call only once no thread uses this store any more."""
        with self._lock:
            for _, conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


# ---------------------------------------------------------------------------------------------------------------
# Jobs

_JOB_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        idempotency_key TEXT,
        version INTEGER NOT NULL,
        request TEXT NOT NULL,
        phases TEXT NOT NULL,
        progress TEXT,
        error TEXT,
        artifacts TEXT NOT NULL,
        cost TEXT
    )""",
    # Partial index: jobs without a key never collide.
    """CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
        ON jobs(owner, idempotency_key) WHERE idempotency_key IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs(owner, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at DESC, id DESC)",
]
_JSON_COLUMNS = ("request", "phases", "progress", "error", "artifacts", "cost")
_COLUMNS = ("id", "owner", "state", "created_at", "updated_at", "idempotency_key", "version", *_JSON_COLUMNS)


def _to_row(job: Job) -> tuple[Any, ...]:
    data = job.model_dump(mode="json")
    return tuple(
        json.dumps(data[c], sort_keys=True) if c in _JSON_COLUMNS and data[c] is not None else data[c] for c in _COLUMNS
    )


def _from_row(row: sqlite3.Row) -> Job:
    values = tuple(row[c] for c in _COLUMNS)
    if len(row["request"]) > _CACHED_REQUEST_CHARS:
        return _validated(values)
    # A copy, so that a caller who sets a field of its job changes no other caller's.
    return _cached(values).model_copy()


def _validated(values: tuple[Any, ...]) -> Job:
    data = dict(zip(_COLUMNS, values, strict=True))
    for c in _JSON_COLUMNS:
        if data[c] is not None:
            data[c] = json.loads(data[c])
    return Job.model_validate(data)


# Each distinct row is validated once: validating a job's record was most of the time of reading it (a page of
# GET /jobs reads 50), and every write makes a new row (its version, its updated_at). Rows with a large inline
# sequence are not kept, which bounds the memory held to about 1,024 x 3 x 16 KB.
_cached = functools.lru_cache(maxsize=1024)(_validated)
_CACHED_REQUEST_CHARS = 16_384


class SqliteJobRepository:
    """JobRepository on a SQLite file. Safe to share between threads; several processes may open one file."""

    def __init__(self, path: str | Path) -> None:
        self._db = _SqliteFile(path, _JOB_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def create(self, job: Job) -> Job:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        try:
            with self._db.write() as conn:
                conn.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", _to_row(job))
        except sqlite3.IntegrityError:
            if job.idempotency_key is not None:
                existing = self._by_key(job.owner, job.idempotency_key)
                if existing is not None:
                    return existing
            raise errors.ConflictError(f"job {job.id} already exists") from None
        return job

    def _by_key(self, owner: str, key: str) -> Job | None:
        row = (
            self._db.read()
            .execute("SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, key))
            .fetchone()
        )
        return _from_row(row) if row is not None else None

    def get(self, job_id: str) -> Job:
        return self._get(self._db.read(), job_id)

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise errors.NotFoundError(f"no job {job_id}", field="id")
        return _from_row(row)

    def list(
        self,
        owner: str | None,
        state: StateFilter = None,
        limit: int = 50,
        token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        states = states_of(state)
        if states is not None:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(s.value for s in states)
        if token is not None:
            # Keyset pagination: rows strictly after the last one shown, so inserts between pages (which sort
            # first, being newer) neither repeat nor hide a row.
            where.append("(created_at, id) < (?, ?)")
            args.extend(decode_token(token))
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self._db.read().execute(sql, (*args, limit + 1)).fetchall()
        jobs = [_from_row(r) for r in rows[:limit]]
        return jobs, (encode_token(jobs[-1]) if len(rows) > limit else None)

    def transition(self, job_id: str, expected_from: Collection[JobState], to: JobState, **changes: Any) -> Job:
        to = JobState(to)
        expected = expected_states(expected_from, to)
        with self._db.write() as conn:
            job = self._get(conn, job_id)
            if job.state not in expected:
                raise move_conflict(job, expected, to)
            moved = changed(job, changes, to=to)
            self._write_back(conn, job, moved, expected)
        return moved

    def update(self, job_id: str, *, expected_from: Collection[JobState] | None = None, **changes: Any) -> Job:
        expected = frozenset(JobState(s) for s in expected_from) if expected_from is not None else None
        with self._db.write() as conn:
            job = self._get(conn, job_id)
            if expected is not None and job.state not in expected:
                raise errors.ConflictError(f"job {job_id} is {job.state.value}; not updated")
            new = changed(job, changes)
            self._write_back(conn, job, new, expected or frozenset({job.state}))
        return new

    @staticmethod
    def _write_back(conn: sqlite3.Connection, old: Job, new: Job, expected: frozenset[JobState]) -> None:
        row = dict(zip(_COLUMNS, _to_row(new), strict=True))
        assignments = ", ".join(f"{c} = ?" for c in ("state", "updated_at", "version", *_JSON_COLUMNS[1:]))
        values = [row[c] for c in ("state", "updated_at", "version", *_JSON_COLUMNS[1:])]
        # The write lock is already held, so this cannot miss; the conditions are kept so that the statement is
        # correct on its own (and a rowcount of 0 can never pass silently).
        cur = conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND version = ? "
            f"AND state IN ({', '.join('?' for _ in expected)})",
            (*values, old.id, old.version, *(s.value for s in expected)),
        )
        if cur.rowcount != 1:
            raise errors.ConflictError(f"job {old.id} changed while it was being written")

    def delete(self, job_id: str) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                f"DELETE FROM jobs WHERE id = ? AND state IN ({', '.join('?' for _ in TERMINAL)})",
                (job_id, *(s.value for s in TERMINAL)),
            )
            if cur.rowcount == 1:
                return
            job = self._get(conn, job_id)  # NotFoundError if absent
        raise errors.ConflictError(f"job {job_id} is {job.state.value}; only finished jobs can be deleted")


# ---------------------------------------------------------------------------------------------------------------
# API keys

_KEY_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        admin INTEGER NOT NULL,
        kdf TEXT NOT NULL,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
]


class SqliteApiKeyStore:
    """ApiKeyStore on a SQLite file: keys `af2_<id>_<secret>`, stored as a salted scrypt hash of the secret."""

    def __init__(self, path: str | Path) -> None:
        self._db = _SqliteFile(path, _KEY_SCHEMA)
        with self._db.write() as conn:  # a file made before keys had an e-mail address gets the column
            if "email" not in {row["name"] for row in conn.execute("PRAGMA table_info(api_keys)")}:
                conn.execute("ALTER TABLE api_keys ADD COLUMN email TEXT")

    def close(self) -> None:
        self._db.close()

    def create(self, owner: str, admin: bool = False, email: str | None = None) -> str:
        apikeys.check_owner(owner)
        if email is not None:
            apikeys.check_email(email)
        key = apikeys.new_key()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, owner, admin, kdf, salt, hash, created_at, email) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (key.key_id, owner, int(admin), key.kdf, key.salt, key.hash, utc_now(), email),
            )
        return key.text

    def verify(self, key: str) -> Principal | None:
        return apikeys.verify(key, self._stored)

    def _stored(self, key_id: str) -> apikeys.StoredKey | None:
        row = self._db.read().execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return None
        return apikeys.StoredKey(owner=row["owner"], admin=bool(row["admin"]), salt=row["salt"], kdf=row["kdf"],
                                 hash=row["hash"], revoked=row["revoked_at"] is not None)

    def list(self, owner: str | None = None) -> list[ApiKeyInfo]:
        sql = "SELECT key_id, owner, admin, created_at, revoked_at, email FROM api_keys"
        args: tuple[Any, ...] = ()
        if owner is not None:
            sql, args = sql + " WHERE owner = ?", (owner,)
        rows = self._db.read().execute(sql + " ORDER BY created_at, key_id", args).fetchall()
        return [ApiKeyInfo(r["key_id"], r["owner"], bool(r["admin"]), r["created_at"], r["revoked_at"], r["email"])
                for r in rows]

    def revoke(self, key_id: str) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?", (utc_now(), key_id)
            )
            if cur.rowcount != 1:
                raise errors.NotFoundError(f"no API key {key_id}", field="key_id")
