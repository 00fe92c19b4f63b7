"""What the bad-input and auth tests share: the API under test in its two forms (the local ASGI app on SQLite and a
directory; the Lambda resolver on DynamoDB and S3 under moto), and a snapshot of everything a request could have
written, to show that a refused request wrote nothing.

The fixtures are imported by the test modules that use them (tests/reliability has no conftest.py of ours)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.functional.api_support import (  # noqa: F401 - aws, env and keys are fixtures, re-exported
    SEQ,
    Env,
    Reply,
    aws,
    env,
    keys,
    make_env,
)

ERROR_KEYS = {"error", "message", "field"}


@dataclass(frozen=True)
class Written:
    """Everything a request could leave behind."""

    jobs: tuple[str, ...]
    objects: tuple[str, ...]
    files: tuple[str, ...]  # local only: every file under the test's directory but the SQLite database's own
    started: tuple[str, ...]
    notified: tuple[str, ...]


def written(env: Env) -> Written:
    world = env.world
    jobs, _ = world.repo.list(None, limit=1000)
    files: tuple[str, ...] = ()
    if env.kind == "local":
        files = tuple(sorted(
            str(p.relative_to(env.root)) for p in env.root.rglob("*") if p.is_file() and ".sqlite3" not in p.name
        ))
    return Written(
        jobs=tuple(sorted(j.id for j in jobs)),
        objects=tuple(sorted(world.store.list(""))),
        files=files,
        started=tuple(world.orchestrator.started),
        notified=tuple(job_id for job_id, _ in world.notifier.events),
    )


def error(reply: Reply, *statuses: int) -> dict[str, Any]:
    """The error body of `reply` after checking its status (one of `statuses`), its shape and its media type."""
    assert reply.status in statuses, (reply.status, reply.text)
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    body = reply.json()
    assert set(body) == ERROR_KEYS and isinstance(body["message"], str) and body["message"].strip(), body
    return body


def body_of(value: Any) -> bytes:
    """JSON text for `value`, lone surrogates kept as the \\udXXX escapes a client may send."""
    return json.dumps(value).encode()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures (import them into a test module to use them)


@pytest.fixture
def local_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from make_env("local", request, tmp_path)


@pytest.fixture
def lambda_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from make_env("lambda", request, tmp_path)
