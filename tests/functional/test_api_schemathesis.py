"""Schemathesis against the local server (uvicorn on a loopback port) from its own /openapi.json: requests made
from the document, valid and not, must never get a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.schemas import OpenApiSchema

from af2jobs.api.app import create_asgi_app
from af2jobs.models import JobState, Principal
from af2jobs.request import JobRequest
from tests.functional.api_support import SEQ, World, close_world, local_keys, local_world, serve

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("schemathesis")
    world = local_world(root, local_keys(root))
    ann = Principal("ann")
    # Jobs in several states, so listings and filters have something to page through.
    jobs = [world.service.submit(ann, JobRequest.parse({"fasta": f"seed{i}", "sequence": SEQ})) for i in range(3)]
    world.move(jobs[1].id, JobState.VALIDATING, JobState.MSA)
    world.move(jobs[2].id, JobState.CANCELLED)
    yield world
    close_world(world)


@pytest.fixture(scope="module")
def base_url(world: World) -> Iterator[str]:
    with serve(create_asgi_app(world)) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


# Every operation of the document (checked below), one test each so a failure names its operation.
OPERATIONS = [
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("POST", "/jobs/cancel"),
    ("DELETE", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("DELETE", "/jobs/{job_id}"),
    ("GET", "/jobs/{job_id}/files"),
    ("GET", "/jobs/{job_id}/file"),
    ("GET", "/jobs/{job_id}/link"),  # no key: random signatures meet 403, never a 5xx
    ("POST", "/uploads"),
    ("PUT", "/uploads"),
]


# schemathesis' pytest loader (`from_fixture`) does not run under pytest 9, so the operation's Hypothesis
# strategy is driven directly: the same generation, with an explicit example budget.
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_gets_a_server_error(
    api_schema: OpenApiSchema, world: World, base_url: str, method: str, path: str
) -> None:
    strategy = api_schema[path][method].as_strategy()
    if "{job_id}" in path:
        # Random ids only ever meet a 404; half the cases use the seeded jobs' ids to reach the code behind it.
        ids = st.sampled_from([job.id for job in world.repo.list(None)[0]])
        strategy = st.one_of(strategy, st.tuples(strategy, ids).map(lambda pair: _with_id(*pair)))
    statuses: list[int] = []

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers={"Authorization": world.ann}, checks=[not_a_server_error]
        )
        statuses.append(response.status_code)

    check()
    assert len(statuses) >= 10, statuses  # requests were really sent
    if "{job_id}" in path:
        assert set(statuses) - {404}, statuses  # and the seeded ids got past the lookup


def _with_id(case: schemathesis.Case, job_id: str) -> schemathesis.Case:
    case.path_parameters = {**(case.path_parameters or {}), "job_id": job_id}
    if case.operation.path.endswith("/file"):
        case.query = {**(case.query or {}), "path": "input.fasta"}  # the one file every job has
    return case


def test_the_document_lists_exactly_these_operations(api_schema: OpenApiSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)
