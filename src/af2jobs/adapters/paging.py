"""Listing helpers shared by every JobRepository: state filters and opaque page tokens.

A token is (created_at, id) of the last job of a page, so pages stay stable while new jobs arrive.
"""

from __future__ import annotations

import base64
import binascii
import json

from af2jobs import errors
from af2jobs.models import Job, JobState
from af2jobs.ports import StateFilter


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
