"""What every JobRepository shares (SQLite, DynamoDB, the tests' in-memory one): the checks on a move and on a
change, a job record with changes applied, state filters and opaque page tokens.

A token is (created_at, id) of the last job of a page, so pages stay stable while new jobs arrive.
"""

from __future__ import annotations

import base64
import binascii
import json

from collections.abc import Collection, Mapping
from typing import Any

from af2jobs import errors
from af2jobs.models import TERMINAL, Job, JobState, Phase, can_move, utc_now
from af2jobs.ports import MAX_PAGE, MERGED_FIELDS, MUTABLE_FIELDS, StateFilter


def expected_states(expected_from: Collection[JobState], to: JobState) -> frozenset[JobState]:
    """The states a move may leave; ValueError for a move the state graph never allows (a caller bug, not a race)."""
    expected = frozenset(JobState(s) for s in expected_from)
    illegal = sorted(s.value for s in expected if not can_move(s, to))
    if not expected or illegal:
        raise ValueError(f"cannot transition {illegal or 'from no state'} to {JobState(to).value}")
    return expected


def check_changes(changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - MUTABLE_FIELDS
    if unknown:
        raise TypeError(f"cannot change {sorted(unknown)}; only {sorted(MUTABLE_FIELDS)}")


def move_conflict(job: Job, expected: Collection[JobState], to: JobState) -> errors.ConflictError:
    states = "/".join(sorted(JobState(s).value for s in expected))
    return errors.ConflictError(f"job {job.id} is {job.state.value}, not {states}; it cannot move to {to.value}")


def changed(job: Job, changes: Mapping[str, Any], *, to: JobState | None = None) -> Job:
    """`job` with `changes` applied (MERGED_FIELDS merged entry by entry, None clears), the phase times of a move
    to `to`, a new updated_at and version."""
    check_changes(changes)
    now = utc_now()
    data = job.model_dump()
    for name, value in changes.items():
        if name in MERGED_FIELDS and value is not None:
            data[name] = {**(data[name] or {}), **dict(value)}
        else:
            data[name] = value
    if to is not None:
        phases = {k: Phase.model_validate(v) for k, v in data["phases"].items()}
        current = phases.get(job.state.value)
        if current is not None and current.ended_at is None:
            current.ended_at = now
        phases[to.value] = Phase(started_at=now, ended_at=now if to in TERMINAL else None)
        data["phases"] = phases
        data["state"] = to
    data["updated_at"] = now
    data["version"] = job.version + 1
    return Job.model_validate(data)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError(f"limit must be from 1 to {MAX_PAGE}", field="limit")


def states_of(state: StateFilter) -> frozenset[JobState] | None:
    if state is None:
        return None
    if isinstance(state, str):  # a JobState is a str too
        return frozenset({JobState(state)})
    return frozenset(JobState(s) for s in state)


def encode_token(job: Job) -> str:
    raw = json.dumps([job.created_at, job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, job_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(job_id, str):
            raise ValueError("not two strings")
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise errors.ValidationError("token is not a page token from a previous listing", field="token") from None
    return created_at, job_id
