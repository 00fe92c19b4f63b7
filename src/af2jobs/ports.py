"""What the core needs from the outside world. Adapters (local/, aws/) implement these; only wiring.py picks one."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from af2jobs.models import Job, JobEvent, JobState, Principal

# One state, or several (e.g. UNFINISHED), to filter a listing on.
StateFilter = JobState | Collection[JobState] | None
# The most jobs one listing page holds.
MAX_PAGE = 1000
# Fields a transition or update may change; the rest (owner, request, ...) are fixed once a job exists.
MUTABLE_FIELDS = frozenset({"progress", "error", "artifacts", "cost"})
# Dict fields merged key by key, so writers adding different artifacts never erase each other's.
MERGED_FIELDS = frozenset({"artifacts", "cost"})


class JobRepository(Protocol):
    """Job records. Every state change is conditional, so concurrent actors cannot both move one job."""

    def create(self, job: Job) -> Job:
        """Store a new job. A repeat of (owner, idempotency_key) stores nothing and returns the existing job."""
        ...

    def get(self, job_id: str) -> Job:
        """The job, or NotFoundError."""
        ...

    def list(
        self,
        owner: str | None,
        state: StateFilter = None,
        limit: int = 50,
        token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. owner None lists every owner's jobs (admin). Returns the page and an opaque token for
        the next page, or None on the last one."""
        ...

    def transition(self, job_id: str, expected_from: Collection[JobState], to: JobState, **changes: Any) -> Job:
        """Atomically move the job to `to` if its state is in `expected_from`, applying `changes` (progress,
        error, artifacts, cost) in the same write; ConflictError otherwise, NotFoundError if absent."""
        ...

    def update(self, job_id: str, *, expected_from: Collection[JobState] | None = None, **changes: Any) -> Job:
        """Change progress/error/artifacts/cost without changing the state. Dict fields (artifacts, cost) are
        merged key by key, so two writers adding artifacts never erase each other's."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove a finished job's record; ConflictError if it is not terminal, NotFoundError if absent."""
        ...


class ArtifactStore(Protocol):
    """Objects under `input/...` (uploads) and `jobs/<job_id>/...` (one job's files). Keys are relative POSIX
    paths; a key that is absolute, has '..' or escapes the store raises ValidationError."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes, or NotFoundError."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys starting with `prefix` (plain string prefix, as S3 has it), sorted."""
        ...

    def delete_prefix(self, job_id: str) -> int:
        """Remove exactly `jobs/<job_id>/` and return how many objects went; other jobs are untouched even when
        their ids share a prefix."""
        ...

    def url(self, key: str, expires_s: int = 3600) -> str:
        """A URL the caller can fetch the object from (presigned on S3, file:// locally)."""
        ...

    def upload_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A URL the caller can PUT the object to directly (presigned on S3); None where uploads go through the
        API itself (the local directory store)."""
        ...


class Orchestrator(Protocol):
    """Runs the pipeline for a job (Step Functions + Batch on AWS, a worker locally)."""

    def start(self, job: Job) -> None: ...

    def cancel(self, job: Job) -> None:
        """Stop a job's compute. Must be safe to call more than once."""
        ...


class Notifier(Protocol):
    def notify(self, job: Job, event: JobEvent) -> None: ...


class OwnerMail(Protocol):
    """Where a mail service delivers each owner's job mail (AWS: one SNS e-mail subscription per address, whose
    filter policy admits the owners that address receives for)."""

    def route(self, email: str, owners: list[str]) -> None:
        """Deliver the mail of `owners` to `email` from now on; no owners: deliver nothing to it."""
        ...


class JobLogs(Protocol):
    """The live log of a running job's stage, where it is not in the store until the stage ends (AWS Batch)."""

    def tail(self, job: Job, lines: int) -> list[str] | None:
        """The last `lines` lines of the running stage's log; None when there is none to read (the stored log
        then answers)."""
        ...


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the secret or its hash."""

    key_id: str
    owner: str
    admin: bool
    created_at: str
    revoked_at: str | None = None
    email: str | None = None  # where the owner's job mail goes (apikeys.mail_addresses)


class ApiKeyStore(Protocol):
    def create(self, owner: str, admin: bool = False, email: str | None = None) -> str:
        """A new key `af2_<id>_<secret>`. This is the only time the plaintext exists; only a hash is kept.
        `email` is the owner's address for job mail (apikeys.check_email)."""
        ...

    def verify(self, key: str) -> Principal | None:
        """Who the key belongs to, or None for an unknown, wrong, malformed or revoked key."""
        ...

    def list(self, owner: str | None = None) -> list[ApiKeyInfo]: ...

    def revoke(self, key_id: str) -> None:
        """Revoke a key (idempotent); NotFoundError if no such key id."""
        ...
