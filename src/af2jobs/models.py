"""The job record and its states: JobState and the state graph, Job, Progress, JobError, Principal. The request a
job is made from is af2jobs.request.JobRequest."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from af2jobs import errors
from af2jobs.request import JobRequest


# ---------------------------------------------------------------------------------------------------------------
# States


class JobState(str, Enum):
    QUEUED = "QUEUED"
    VALIDATING = "VALIDATING"
    MSA = "MSA"
    PREDICTING = "PREDICTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


_S = JobState
# The only moves a job may make. Every writer (service, local worker, Step Functions tasks) goes through a
# conditional transition, so a move not listed here cannot happen whoever attempts it.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.VALIDATING, _S.CANCELLING, _S.CANCELLED, _S.FAILED}),
    _S.VALIDATING: frozenset({_S.MSA, _S.FAILED, _S.CANCELLING}),
    _S.MSA: frozenset({_S.PREDICTING, _S.FAILED, _S.CANCELLING}),
    _S.PREDICTING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELLING}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
TERMINAL: frozenset[JobState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
UNFINISHED: frozenset[JobState] = frozenset(JobState) - TERMINAL
# States in which compute may be running: cancelling them needs the orchestrator, not just a record update.
RUNNING: frozenset[JobState] = frozenset({_S.VALIDATING, _S.MSA, _S.PREDICTING})


def can_move(current: JobState, to: JobState) -> bool:
    return JobState(to) in TRANSITIONS[JobState(current)]


def is_terminal(state: JobState) -> bool:
    return JobState(state) in TERMINAL


def advance(current: JobState, to: JobState) -> JobState:
    """The state after moving `current` to `to`; ConflictError if the graph forbids it."""
    if not can_move(current, to):
        raise errors.ConflictError(f"a job cannot move from {JobState(current).value} to {JobState(to).value}")
    return JobState(to)


class JobEvent(str, Enum):
    """What a Notifier is told about."""

    SUBMITTED = "submitted"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Principal:
    """Who is calling. Admins see and act on every owner's jobs."""

    owner: str
    admin: bool = False


# ---------------------------------------------------------------------------------------------------------------
# The job record


def utc_now() -> str:
    """A UTC timestamp of fixed width, so text order is time order (pagination sorts on it)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_job_id() -> str:
    return uuid.uuid4().hex


class Phase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started_at: str
    ended_at: str | None = None


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    step: int = Field(0, ge=0)
    total: int | None = Field(None, ge=0)
    message: str = ""


class JobError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    stage: str | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_job_id, pattern=r"^[0-9a-f]{32}$")
    owner: str = Field(min_length=1, max_length=200)
    state: JobState = JobState.QUEUED
    request: JobRequest
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = ""
    phases: dict[str, Phase] = Field(default_factory=dict)
    progress: Progress | None = None
    error: JobError | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)
    cost: dict[str, Any] | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    version: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _defaults_from_creation(self) -> Job:
        # A new job has been updated when it was created and has been QUEUED since then.
        if not self.updated_at:
            self.updated_at = self.created_at
        if not self.phases:
            self.phases = {self.state.value: Phase(started_at=self.created_at)}
        return self

    @property
    def finished(self) -> bool:
        return is_terminal(self.state)

    def to_public(self) -> dict[str, Any]:
        """The API's view of a job: JSON-ready, without the caller's idempotency key."""
        out = self.model_dump(mode="json", exclude={"idempotency_key"})
        out["finished"] = self.finished
        return out
