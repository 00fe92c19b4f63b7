"""The job API's routes, each test run twice: under the local ASGI app (SQLite, a directory) and under the Lambda
resolver fed API Gateway REST proxy events (DynamoDB and S3 under moto). Without the TOKEN authorizer's context in
the event, the Lambda checks the key itself, so the same auth matrix applies to both."""

from __future__ import annotations

import asyncio
import time

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from af2jobs.api.app import create_asgi_app, create_lambda_resolver
from af2jobs.models import JobState, Principal
from tests.functional.api_support import (  # noqa: F401 - aws, env and keys are fixtures
    MAX_BODY,
    SEQ,
    AsgiClient,
    Env,
    Keys,
    Reply,
    asgi_client,
    aws,
    env,
    close_world,
    keys,
    lambda_client,
    local_world,
    serve,
)
from tests.unit.test_viewtext import resolver_text

S = JobState
JOB = {"fasta": "job1", "sequence": SEQ}


def error(reply: Reply, status: int) -> dict[str, Any]:
    """The error body of `reply`, after checking its status and shape."""
    assert reply.status == status, reply.text
    body = reply.json()
    assert set(body) == {"error", "message", "field"}, body
    return body


# ==============================================================================================================
# Every route, for the auth matrix

@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {id}: a job of ann's
    ok: int  # the status for its owner
    finished: bool = False  # the job must be finished first (delete routes)
    body: Any = None
    query: tuple[tuple[str, str], ...] = ()

    def url(self, job_id: str) -> str:
        return self.path.replace("{id}", job_id)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("POST", "/jobs", 201, body=JOB),
    Route("GET", "/jobs", 200),
    Route("GET", "/jobs/{id}", 200),
    Route("POST", "/jobs/{id}/cancel", 200),
    Route("POST", "/jobs/cancel", 200),
    Route("DELETE", "/jobs/{id}", 200, finished=True),
    Route("DELETE", "/jobs", 200, finished=True),
    Route("GET", "/jobs/{id}/files", 200),
    Route("GET", "/jobs/{id}/file", 200, query=(("path", "input.fasta"),)),
    Route("POST", "/uploads", 201, body={"file_name": "lab/a.fasta"}),
    Route("PUT", "/uploads", 201, body=JOB, query=(("file_name", "lab/a.fasta"),)),
]
JOB_ROUTES = [r for r in ROUTES if "{id}" in r.path]


def request(env: Env, route: Route, key: str | None, job_id: str) -> Reply:
    # On AWS a file comes as a redirect to storage, and an upload goes to storage, not through the API.
    lambda_ok = {"GET /jobs/{id}/file": 307, "PUT /uploads": 400}
    ok = lambda_ok.get(str(route), route.ok) if env.kind == "lambda" else route.ok
    reply = env.call(route.method, route.url(job_id), key, json_body=route.body, query=dict(route.query))
    reply.expected_ok = ok  # type: ignore[attr-defined]
    return reply


def anns_job(env: Env, route: Route) -> str:
    job_id = env.submit(env.world.ann)["id"]
    if route.finished:
        env.world.move(job_id, S.CANCELLED)
    return job_id


# The one route that takes no API key: a signed link from a job's mail (its own tests are below).
KEYLESS = {("GET", "/jobs/{id}/link")}


def test_the_matrix_covers_every_documented_route(env: Env) -> None:
    doc = env.call("GET", "/openapi.json").json()
    documented = {(m.upper(), p.replace("{job_id}", "{id}")) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in ROUTES} | KEYLESS
    keyless = {(m.upper(), p.replace("{job_id}", "{id}")) for p, ops in doc["paths"].items()
               for m, op in ops.items() if op.get("security") == [{}]}
    assert keyless == KEYLESS  # the document says which route asks for no key, and only that one


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_missing_or_wrong_key_is_401(env: Env, route: Route) -> None:
    job_id = anns_job(env, route)
    real = env.world.ann
    wrong = [
        None,
        real[:-2] + ("AA" if not real.endswith("AA") else "BB"),  # a typo in the secret
        "af2_" + "0" * 16 + "_" + "x" * 43,  # well formed, unknown id
        "nonsense",
        "Bearer ",
        env.world.key.revoked,
    ]
    for key in wrong:
        reply = request(env, route, key, job_id)
        assert error(reply, 401)["field"] == "Authorization", key
        assert reply.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_owner_key_is_accepted_bare_or_bearer(env: Env, route: Route) -> None:
    for form in ("{}", "Bearer {}", "bearer  {} "):
        job_id = anns_job(env, route)
        reply = request(env, route, form.format(env.world.ann), job_id)
        assert reply.status == reply.expected_ok, (form, reply.text)  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", JOB_ROUTES, ids=str)
def test_another_owners_job_is_404(env: Env, route: Route) -> None:
    job_id = anns_job(env, route)
    assert error(request(env, route, env.world.bob, job_id), 404)["error"] == "NotFoundError"
    assert env.world.repo.get(job_id).state is (S.CANCELLED if route.finished else S.QUEUED)  # untouched


@pytest.mark.parametrize("route", JOB_ROUTES, ids=str)
def test_admin_reaches_every_owners_job(env: Env, route: Route) -> None:
    job_id = anns_job(env, route)
    reply = request(env, route, env.world.admin, job_id)
    assert reply.status == reply.expected_ok, reply.text  # type: ignore[attr-defined]


def test_listings_admin_sees_all_owners_see_their_own(env: Env) -> None:
    ann, bob = env.submit(env.world.ann)["id"], env.submit(env.world.bob)["id"]

    def ids(key: str) -> set[str]:
        return {j["id"] for j in env.call("GET", "/jobs", key).json()["jobs"]}

    assert ids(env.world.ann) == {ann}
    assert ids(env.world.bob) == {bob}
    assert ids(env.world.admin) == {ann, bob}


def test_bulk_routes_act_on_the_callers_own_jobs_unless_an_admin_asks_for_all(env: Env) -> None:
    ann, bob = env.submit(env.world.ann)["id"], env.submit(env.world.bob)["id"]
    error(env.call("POST", "/jobs/cancel", env.world.ann, query={"all_owners": "true"}), 403)
    assert [j["id"] for j in env.call("POST", "/jobs/cancel", env.world.admin).json()["jobs"]] == []
    cancelled = env.call("POST", "/jobs/cancel", env.world.admin, query={"all_owners": "true"}).json()["jobs"]
    assert {j["id"] for j in cancelled} == {ann, bob}
    error(env.call("DELETE", "/jobs", env.world.bob, query={"all_owners": "true"}), 403)
    deleted = env.call("DELETE", "/jobs", env.world.admin, query={"all_owners": "true"}).json()["deleted"]
    assert set(deleted) == {ann, bob}


# ==============================================================================================================
# Keys stay secret


def test_keys_never_appear_in_logs_or_replies(
    env: Env, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Powertools' debug mode prints whole events (Authorization included); the apps must not honour it.
    monkeypatch.setenv("POWERTOOLS_DEV", "1")
    env.client = asgi_client(env.world) if env.kind == "local" else lambda_client(env.world)
    caplog.set_level(logging.DEBUG)
    wrong = env.world.ann[:-6] + "ZZZZZZ"
    keys = [env.world.ann, env.world.bob, env.world.admin, wrong]
    replies: list[Reply] = []
    for route in ROUTES:
        job_id = anns_job(env, route)
        for key in (env.world.ann, f"Bearer {wrong}", env.world.bob if route in JOB_ROUTES else env.world.admin):
            replies.append(request(env, route, key, job_id))
    env.world.orchestrator.fail_start = True  # a 500, whose traceback is logged
    replies.append(env.call("POST", "/jobs", env.world.ann, json_body=JOB))
    assert replies[-1].status == 500
    captured = capsys.readouterr()
    logged = "\n".join(r.getMessage() + "\n" + (r.exc_text or "") for r in caplog.records)
    assert "traceback" in caplog.text.lower()  # the 500 was logged, so the check below looked at something
    everything = logged + captured.out + captured.err + "".join(r.text + json.dumps(r.headers) for r in replies)
    for key in keys:
        secret = key.split("_", 2)[2]  # af2_<key id>_<secret>; the secret itself may contain '_'
        assert len(secret) >= 20 and secret not in everything


def test_a_server_error_tells_the_caller_nothing_internal(env: Env) -> None:
    env.world.orchestrator.fail_start = True
    body = error(env.call("POST", "/jobs", env.world.ann, json_body=JOB), 500)
    assert body == {"error": "InternalError", "message": "internal error; see the server log", "field": None}


# ==============================================================================================================
# Submitting


def test_submit_answers_201_with_the_job_and_its_location(env: Env) -> None:
    reply = env.call("POST", "/jobs", env.world.ann, json_body={**JOB, "strategy": "best", "model_names": ["model_1"]})
    assert reply.status == 201, reply.text
    job = reply.json()
    assert job["state"] == "QUEUED" and job["owner"] == "ann" and job["finished"] is False
    assert job["request"]["strategy"] == "best" and job["request"]["que"] == "low"  # auto resolved by length
    assert "idempotency_key" not in job
    location = reply.headers["location"]
    # The Lambda sees the path with API Gateway's stage; the client must get it back.
    assert location == (f"/prod/jobs/{job['id']}" if env.kind == "lambda" else f"/jobs/{job['id']}")
    assert env.world.orchestrator.started == [job["id"]]
    assert env.world.store.get_bytes(f"jobs/{job['id']}/input.fasta").startswith(b">job1\n")
    estimate = job["estimate"]  # priced on the queue's instance, from the stored input's length
    assert estimate["queue"] == "low" and estimate["gpu_instance"] == "g5.2xlarge" and estimate["total_usd"] > 0


def test_same_idempotency_key_twice_gives_one_job(env: Env) -> None:
    headers = {"Idempotency-Key": "run-2024-001"}
    first = env.call("POST", "/jobs", env.world.ann, json_body=JOB, headers=headers)
    second = env.call("POST", "/jobs", env.world.ann, json_body=JOB, headers=headers)
    assert first.status == second.status == 201
    assert first.json()["id"] == second.json()["id"]
    assert [j["id"] for j in env.call("GET", "/jobs", env.world.ann).json()["jobs"]] == [first.json()["id"]]
    assert env.world.orchestrator.started == [first.json()["id"]]
    # Another owner's key space is separate.
    assert env.call("POST", "/jobs", env.world.bob, json_body=JOB, headers=headers).json()["id"] != first.json()["id"]


def test_idempotency_key_reused_for_another_request_is_409(env: Env) -> None:
    headers = {"Idempotency-Key": "k1"}
    env.call("POST", "/jobs", env.world.ann, json_body=JOB, headers=headers)
    reply = env.call("POST", "/jobs", env.world.ann, json_body={**JOB, "gpu": 2}, headers=headers)
    assert error(reply, 409)["field"] == "idempotency_key"


def test_body_over_the_limit_is_413_whatever_else_is_wrong(env: Env) -> None:
    padded = json.dumps({**JOB, "comment": "x"}) + " " * MAX_BODY  # valid JSON, valid request, too big
    assert error(env.call("POST", "/jobs", env.world.ann, body=padded.encode()), 413)["field"] == "body"
    garbage = b"{" * (MAX_BODY + 1)
    error(env.call("POST", "/jobs", env.world.ann, body=garbage), 413)
    error(env.call("POST", "/jobs", None, body=garbage), 413)  # refused before the key is even looked at
    assert env.world.repo.list(None)[0] == []


def test_local_server_refuses_a_chunked_body_once_it_passes_the_limit(tmp_path: Path, keys: Keys) -> None:
    world = local_world(tmp_path, keys)
    client = asgi_client(world, chunk=1000)  # no Content-Length: only counting can tell
    reply = client.call("POST", "/jobs", body=b" " * (MAX_BODY + 10), headers={"Authorization": world.ann})
    assert error(reply, 413)["field"] == "body"
    ok = client.call("POST", "/jobs", json_body=JOB, headers={"Authorization": world.ann})
    assert ok.status == 201, ok.text
    close_world(world)


@pytest.mark.parametrize("method,path,size", [("PUT", "/uploads?file_name=big.fasta", 250 << 20),
                                              ("POST", "/jobs", MAX_BODY - 100)])
@pytest.mark.parametrize("header", [None, "not-a-key"])
def test_the_key_is_checked_before_a_byte_of_the_body_is_read(tmp_path: Path, keys: Keys, method: str, path: str,
                                                               size: int, header: str | None) -> None:
    """An anonymous (or wrongly keyed) 250 MB upload is answered 401 at its headers: the server reads none of it."""
    world = local_world(tmp_path, keys)
    app = create_asgi_app(world)
    read: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        read.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}  # an endless body

    async def send(message: dict) -> None:
        sent.append(message)

    target, _, query = path.partition("?")
    headers = [(b"content-length", str(size).encode())] + (
        [(b"authorization", header.encode())] if header else [])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": target,
             "raw_path": target.encode(), "query_string": query.encode(), "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401 and read == []
    close_world(world)


def test_malformed_json_is_400(env: Env) -> None:
    body = error(env.call("POST", "/jobs", env.world.ann, body=b'{"fasta": "x",'), 400)
    assert body["field"] == "body" and "JSON" in body["message"]
    error(env.call("POST", "/jobs", None, body=b'{"fasta": "x",'), 401)  # the key is checked first


def test_a_body_that_is_not_json_is_415(env: Env) -> None:
    reply = env.call("POST", "/jobs", env.world.ann, body=b"fasta=x", headers={"Content-Type": "text/plain"})
    assert error(reply, 415)["field"] == "body"


BAD_FIELDS = [
    ({"fasta": "has space"}, "fasta", "fasta (the job name)"),
    ({"sequence": None, "file_name": "../etc/passwd"}, "file_name", "file_name"),
    ({"sequence": ""}, "sequence", "sequence"),
    ({"model_names": ["model_9"]}, "model_names", "model_9"),
    ({"preset": "huge"}, "preset", "preset must be one of"),
    ({"max_template_date": "2020-13-01"}, "max_template_date", "YYYY-MM-DD"),
    ({"max_template_date": "2999-01-01"}, "max_template_date", "in the future"),
    ({"que": "xl"}, "que", "que must be one of"),
    ({"comment": "c" * 1001}, "comment", "at most 1000"),
    ({"gpu": 9}, "gpu", "1 to 8"),
    ({"gpu": True}, "gpu", "1 to 8"),
    ({"strategy": "worst"}, "strategy", "stop-at-score"),
    ({"colour": "red"}, "colour", "not a request field"),
    ({"sequence": "MKTAYIAKQRQISFVKSHFSRQ1"}, "sequence", "column"),  # FASTA content: checked by the service
]


@pytest.mark.parametrize(("change", "field", "says"), BAD_FIELDS, ids=[f for _, f, _ in BAD_FIELDS])
def test_each_bad_field_is_422_and_named(env: Env, change: dict[str, Any], field: str, says: str) -> None:
    body = {k: v for k, v in {**JOB, **change}.items() if v is not None}
    reply = error(env.call("POST", "/jobs", env.world.ann, json_body=body), 422)
    assert reply["field"] == field and says in reply["message"], reply
    assert env.world.repo.list(None)[0] == [] and env.world.store.list("jobs/") == []


def test_a_missing_field_and_a_request_that_is_not_an_object_are_422(env: Env) -> None:
    assert error(env.call("POST", "/jobs", env.world.ann, json_body={"sequence": SEQ}), 422)["field"] == "fasta"
    assert error(env.call("POST", "/jobs", env.world.ann, json_body=["fasta"]), 422)["message"]
    both = error(env.call("POST", "/jobs", env.world.ann, json_body={**JOB, "file_name": "a.fasta"}), 422)
    assert "exactly one of file_name" in both["message"]


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "field"),
    [
        ("GET", "/jobs", {"limit": "0"}, {}, "limit"),
        ("GET", "/jobs", {"limit": "many"}, {}, "limit"),
        ("GET", "/jobs", {"state": "DONE"}, {}, "state"),
        ("GET", "/jobs", {"next_token": "not-a-token"}, {}, "next_token"),
        ("GET", "/jobs/XYZ", {}, {}, "job_id"),
        ("GET", "/jobs/" + "a" * 32 + "/file", {}, {}, "path"),
        ("POST", "/jobs", {}, {"Idempotency-Key": "k" * 201}, "idempotency-key"),
    ],
)
def test_bad_parameters_are_422_and_named(
    env: Env, method: str, path: str, query: dict[str, str], headers: dict[str, str], field: str
) -> None:
    body = JOB if method == "POST" else None
    reply = env.call(method, path, env.world.ann, query=query, headers=headers, json_body=body)
    assert error(reply, 422)["field"].lower() == field


# ==============================================================================================================
# Reading jobs


def test_list_pages_and_filters(env: Env) -> None:
    ids = [env.submit(env.world.ann, fasta=f"job{i}")["id"] for i in range(3)]
    env.world.move(ids[0], S.CANCELLED)
    first = env.call("GET", "/jobs", env.world.ann, query={"limit": "2"}).json()
    assert [j["id"] for j in first["jobs"]] == ids[:0:-1] and first["next_token"]
    second = env.call("GET", "/jobs", env.world.ann, query={"limit": "2", "next_token": first["next_token"]}).json()
    assert [j["id"] for j in second["jobs"]] == [ids[0]] and second["next_token"] is None
    queued = env.call("GET", "/jobs", env.world.ann, query={"state": "QUEUED"}).json()["jobs"]
    assert {j["id"] for j in queued} == set(ids[1:])


def test_a_page_of_jobs_is_the_text_the_resolver_writes_for_its_jobpage(env: Env) -> None:
    """GET /jobs sends text it made itself from per-job parts (api/viewtext.py): byte for byte what the resolver
    writes for the same JobPage, with Python's spellings (\\u escapes, 3.2e-05, 1e+16), on both apps."""
    w = env.world
    ids = [env.submit(w.ann, fasta=f"job{i}", comment=["", "naïve ✓ 😀 </script> \"q\""][i % 2])["id"]
           for i in range(3)]
    w.repo.update(ids[1], cost={"dollars": 3.2e-05, "gpu_s": 1e16, "n": 3})
    w.move(ids[2], S.VALIDATING, S.MSA)
    for query in ({}, {"limit": "2"}):
        reply = env.call("GET", "/jobs", w.ann, query=query)
        jobs, token = w.service.list(Principal(owner="ann"), limit=int(query.get("limit", 50)))
        assert reply.status == 200 and reply.headers["content-type"] == "application/json"
        assert reply.text == resolver_text(jobs, token)
        assert [j["id"] for j in reply.json()["jobs"]] == ids[::-1][: len(jobs)]


def test_a_listed_job_shows_every_write_since_the_last_page(env: Env) -> None:
    w = env.world
    job_id = env.submit(w.ann)["id"]

    def listed() -> dict[str, Any]:
        return env.call("GET", "/jobs", w.ann).json()["jobs"][0]

    assert listed()["state"] == "QUEUED"
    w.move(job_id, S.VALIDATING)
    job = listed()
    assert (job["state"], job["version"]) == ("VALIDATING", 2)
    w.repo.update(job_id, progress={"stage": "msa", "step": 1, "total": 2}, cost={"dollars": 0.5})
    job = listed()
    assert job["progress"]["step"] == 1 and job["cost"] == {"dollars": 0.5} and job["version"] == 3
    # The listed view is the job's view in GET /jobs/{id} too, field for field, but for the inline sequence.
    one = env.call("GET", f"/jobs/{job_id}", w.ann).json()
    assert job.pop("sequence_bytes") == len(one["request"]["sequence"]) and job["request"].pop("sequence") is None
    assert {k: v for k, v in one.items() if k in job} == {**job, "request": {**job["request"],
                                                                              "sequence": one["request"]["sequence"]}}


def test_job_detail_has_progress_durations_cost_links_and_the_log_tail(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    w = env.world
    w.move(job_id, S.VALIDATING, S.MSA)
    w.repo.update(job_id, progress={"stage": "msa", "step": 2, "total": 3, "message": "uniref90"}, cost={"usd": 0.12})
    w.store.put_bytes(f"jobs/{job_id}/log.txt", "".join(f"line {i}\n" for i in range(80)).encode())
    job = env.call("GET", f"/jobs/{job_id}", w.ann).json()
    assert job["state"] == "MSA" and job["progress"]["step"] == 2 and job["cost"] == {"usd": 0.12}
    assert set(job["durations"]) == {"QUEUED", "VALIDATING", "MSA"}
    assert all(seconds >= 0 for seconds in job["durations"].values())
    assert job["log"] == [f"line {i}" for i in range(30, 80)]
    assert job["reports"] == {}
    w.store.put_bytes(f"jobs/{job_id}/output/ubq/report.html", b"<!DOCTYPE html>")
    w.repo.update(job_id, artifacts={"ubq/report.html": f"jobs/{job_id}/output/ubq/report.html"})
    # A result is linked once the job SUCCEEDED: before, the file route would refuse it (no dead links).
    assert env.call("GET", f"/jobs/{job_id}", w.ann).json()["reports"] == {}
    w.move(job_id, S.PREDICTING, S.SUCCEEDED)
    again = env.call("GET", f"/jobs/{job_id}", w.ann).json()
    assert set(again["reports"]) == {"ubq"} and again["reports"]["ubq"] == again["links"]["ubq/report.html"]
    link = job["links"]["input.fasta"]
    if env.kind == "local":
        assert link == f"/jobs/{job_id}/file?path=input.fasta"
    else:
        assert link.startswith("https://") and f"jobs/{job_id}/input.fasta" in link and "Signature" in link


def test_a_job_without_a_log_has_an_empty_tail(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    assert env.call("GET", f"/jobs/{job_id}", env.world.ann).json()["log"] == []


def test_unknown_job_and_unknown_route_are_404_in_the_error_shape(env: Env) -> None:
    assert error(env.call("GET", "/jobs/" + "0" * 32, env.world.ann), 404)["field"] == "id"
    assert "/openapi.json" in error(env.call("GET", "/no/where", env.world.ann), 404)["message"]
    # One segment is the original platform's GET /{id}: its answer, in its shape.
    assert env.call("GET", "/nowhere", env.world.ann).json()["code"] == 404


# ==============================================================================================================
# Cancelling and deleting


def test_cancel_a_queued_job_and_then_again(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    assert env.call("POST", f"/jobs/{job_id}/cancel", env.world.ann).json()["state"] == "CANCELLED"
    error(env.call("POST", f"/jobs/{job_id}/cancel", env.world.ann), 409)


def test_cancel_a_running_job_asks_the_orchestrator(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    env.world.move(job_id, S.VALIDATING, S.MSA)
    assert env.call("POST", f"/jobs/{job_id}/cancel", env.world.ann).json()["state"] == "CANCELLING"
    assert env.world.orchestrator.cancelled == [job_id]


def test_cancel_all_takes_only_unfinished_jobs(env: Env) -> None:
    queued, running, done = (env.submit(env.world.ann)["id"] for _ in range(3))
    env.world.move(running, S.VALIDATING)
    env.world.move(done, S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED)
    jobs = env.call("POST", "/jobs/cancel", env.world.ann).json()["jobs"]
    assert {(j["id"], j["state"]) for j in jobs} == {(queued, "CANCELLED"), (running, "CANCELLING")}
    assert env.world.repo.get(done).state is S.SUCCEEDED


def test_deleting_a_running_job_is_409_and_keeps_everything(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    env.world.move(job_id, S.VALIDATING, S.MSA)
    assert "cancel it" in error(env.call("DELETE", f"/jobs/{job_id}", env.world.ann), 409)["message"]
    assert env.world.repo.get(job_id).state is S.MSA
    assert env.world.store.list(f"jobs/{job_id}/") == [f"jobs/{job_id}/input.fasta"]


def test_delete_removes_only_its_own_files_even_when_another_id_shares_its_prefix(env: Env) -> None:
    w = env.world
    job = env.submit(w.ann)["id"]
    # A second job whose id differs only in its last digit, with files of its own, and a stray folder whose
    # name starts with the first job's id: a delete by string prefix would take both.
    twin_id = job[:-1] + ("0" if job[-1] != "0" else "1")
    twin = w.repo.get(job).model_copy(update={"id": twin_id, "artifacts": {}, "idempotency_key": None})
    w.repo.create(twin)
    w.store.put_bytes(f"jobs/{twin_id}/ranked_0.pdb", b"ATOM")
    w.store.put_bytes(f"jobs/{job}-archive/keep.txt", b"keep")
    w.store.put_bytes(f"jobs/{job}/ranked_0.pdb", b"ATOM")
    w.move(job, S.CANCELLED)
    assert env.call("DELETE", f"/jobs/{job}", w.ann).json() == {"deleted": [job]}
    assert w.store.list(f"jobs/{job}/") == []
    assert w.store.get_bytes(f"jobs/{twin_id}/ranked_0.pdb") == b"ATOM"
    assert w.store.get_bytes(f"jobs/{job}-archive/keep.txt") == b"keep"
    assert w.repo.get(twin_id).id == twin_id
    error(env.call("GET", f"/jobs/{job}", w.ann), 404)


def test_delete_finished_leaves_unfinished_jobs_and_their_files(env: Env) -> None:
    done, running = env.submit(env.world.ann)["id"], env.submit(env.world.ann)["id"]
    env.world.move(done, S.VALIDATING, S.FAILED)
    env.world.move(running, S.VALIDATING)
    assert env.call("DELETE", "/jobs", env.world.ann).json() == {"deleted": [done]}
    assert env.world.store.list(f"jobs/{done}/") == []
    assert env.world.store.list(f"jobs/{running}/") == [f"jobs/{running}/input.fasta"]


# ==============================================================================================================
# Files


def test_files_are_listed_and_fetched(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    env.world.store.put_bytes(f"jobs/{job_id}/msas/uniref90.sto", b"# STOCKHOLM 1.0\n//\n")
    files = env.call("GET", f"/jobs/{job_id}/files", env.world.ann).json()["files"]
    assert [f["path"] for f in files] == ["input.fasta", "msas/uniref90.sto"]
    reply = env.call("GET", f"/jobs/{job_id}/file", env.world.ann, query={"path": "msas/uniref90.sto"})
    if env.kind == "local":
        assert reply.status == 200 and reply.body == b"# STOCKHOLM 1.0\n//\n"
        assert reply.headers["content-type"] == "application/octet-stream"
        assert files[1]["url"] == f"/jobs/{job_id}/file?path=msas/uniref90.sto"
    else:
        # Lambda answers are capped at 6 MB: the client is sent to S3 instead, with a presigned URL.
        assert reply.status == 307
        assert f"/jobs/{job_id}/msas/uniref90.sto?" in reply.headers["location"]
        assert files[1]["url"].startswith("https://")


@pytest.mark.parametrize("name,data", [("plddt.png", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"),
                                       ("features.pkl", b"\x80\x04\x95\xff"), ("empty.txt", b"")])
def test_binary_files_are_served_byte_for_byte(env: Env, name: str, data: bytes) -> None:
    """A result that is not UTF-8 text (a PNG, a pickle) comes back as it is, by the file route and by a link."""
    job_id = _succeeded_with(env, f"job1/{name}", data)
    reply = env.call("GET", f"/jobs/{job_id}/file", env.world.ann, query={"path": f"output/job1/{name}"})
    signer = env.world.links
    path, query = _link_query(signer.url(job_id, f"output/job1/{name}", signer.expiry()))
    linked = env.call("GET", path, query=query)
    if env.kind == "local":
        assert (reply.status, reply.body) == (200, data) and (linked.status, linked.body) == (200, data)
    else:
        assert reply.status == linked.status == 307


def test_work_files_are_neither_listed_nor_served(env: Env) -> None:
    """A record's work dir holds the stages' own files (markers, features.pkl): never a result, in any state."""
    job_id = env.submit(env.world.ann)["id"]
    env.world.store.put_bytes(f"jobs/{job_id}/work/job1/features.pkl", b"\x80\x04")
    env.world.move(job_id, S.CANCELLED)
    listed = [f["path"] for f in env.call("GET", f"/jobs/{job_id}/files", env.world.ann).json()["files"]]
    assert listed == ["input.fasta"]
    body = error(env.call("GET", f"/jobs/{job_id}/file", env.world.ann, query={"path": "work/job1/features.pkl"}),
                 404)
    assert "work/" in body["message"] and body["field"] == "path"


def test_output_files_of_a_job_that_did_not_succeed_are_neither_listed_nor_served(env: Env) -> None:
    """A publish cut short leaves files under output/; until the job SUCCEEDED they are no results."""
    job_id = env.submit(env.world.ann)["id"]
    env.world.store.put_bytes(f"jobs/{job_id}/output/job1/ranked_0.pdb", b"ATOM\n")
    env.world.store.put_bytes(f"jobs/{job_id}/log.txt", b"publishing\n")
    env.world.repo.transition(job_id, {S.QUEUED}, S.FAILED)
    listed = [f["path"] for f in env.call("GET", f"/jobs/{job_id}/files", env.world.ann).json()["files"]]
    assert listed == ["input.fasta", "log.txt"]
    body = error(env.call("GET", f"/jobs/{job_id}/file", env.world.ann, query={"path": "output/job1/ranked_0.pdb"}),
                 404)
    assert "FAILED" in body["message"] and "ranked_0.pdb" in body["message"]

    done = env.submit(env.world.ann, fasta="job2")["id"]
    env.world.store.put_bytes(f"jobs/{done}/output/job2/ranked_0.pdb", b"ATOM\n")
    for before, after in ((S.QUEUED, S.VALIDATING), (S.VALIDATING, S.MSA), (S.MSA, S.PREDICTING),
                          (S.PREDICTING, S.SUCCEEDED)):
        env.world.repo.transition(done, {before}, after)
    listed = [f["path"] for f in env.call("GET", f"/jobs/{done}/files", env.world.ann).json()["files"]]
    assert "output/job2/ranked_0.pdb" in listed


def _succeeded_with(env: Env, name: str, data: bytes) -> str:
    job_id = env.submit(env.world.ann)["id"]
    env.world.store.put_bytes(f"jobs/{job_id}/output/{name}", data)
    for before, after in ((S.QUEUED, S.VALIDATING), (S.VALIDATING, S.MSA), (S.MSA, S.PREDICTING),
                          (S.PREDICTING, S.SUCCEEDED)):
        env.world.repo.transition(job_id, {before}, after)
    return job_id


def _link_query(url: str) -> tuple[str, dict[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    return parts.path.removeprefix("/v1"), dict(parse_qsl(parts.query))


def test_a_mail_link_fetches_its_file_without_a_key_until_it_expires(env: Env) -> None:
    job_id = _succeeded_with(env, "job1/ranked_0.pdb", b"ATOM      1  N   MET A   1\n")
    signer = env.world.links
    path, query = _link_query(signer.url(job_id, "output/job1/ranked_0.pdb", signer.expiry()))
    assert path == f"/jobs/{job_id}/link"
    reply = env.call("GET", path, query=query)  # no Authorization header
    if env.kind == "local":
        assert reply.status == 200 and reply.body == b"ATOM      1  N   MET A   1\n"
    else:  # a fresh presigned URL at each use
        assert reply.status == 307 and f"/jobs/{job_id}/output/job1/ranked_0.pdb?" in reply.headers["location"]

    expired = signer.url(job_id, "output/job1/ranked_0.pdb", int(time.time()) - 1)
    path, query = _link_query(expired)
    body = error(env.call("GET", path, query=query), 403)
    assert "expired" in body["message"] and f"af2 download {job_id}" in body["message"]


@pytest.mark.parametrize("change", ["path", "job", "expires", "sig", "secret"])
def test_a_changed_or_foreign_link_is_refused_before_anything_is_read(env: Env, change: str) -> None:
    from af2jobs.links import LinkSigner

    job_id = _succeeded_with(env, "job1/ranked_0.pdb", b"ATOM\n")
    other = _succeeded_with(env, "job1/ranked_0.pdb", b"OTHER\n")
    signer = env.world.links
    expires = signer.expiry()
    path, query = _link_query(signer.url(job_id, "output/job1/ranked_0.pdb", expires))
    if change == "path":
        query["path"] = "input.fasta"
    elif change == "job":
        path = f"/jobs/{other}/link"
    elif change == "expires":
        query["expires"] = str(expires + 3600)
    elif change == "sig":
        query["sig"] = query["sig"][:-1] + ("A" if query["sig"][-1] != "A" else "B")
    else:  # signed by another server
        path, query = _link_query(LinkSigner(b"x" * 32, "https://api.example.org/v1").url(
            job_id, "output/job1/ranked_0.pdb", expires))
    body = error(env.call("GET", path, query=query), 403)
    assert "not valid" in body["message"]


def test_a_link_to_a_job_that_did_not_succeed_serves_no_result(env: Env) -> None:
    job_id = env.submit(env.world.ann)["id"]
    env.world.store.put_bytes(f"jobs/{job_id}/output/job1/ranked_0.pdb", b"ATOM\n")
    env.world.repo.transition(job_id, {S.QUEUED}, S.FAILED)
    signer = env.world.links
    path, query = _link_query(signer.url(job_id, "output/job1/ranked_0.pdb", signer.expiry()))
    assert "FAILED" in error(env.call("GET", path, query=query), 404)["message"]


@pytest.mark.parametrize(
    "path", ["../other/input.fasta", "/etc/passwd", "msas/../../x", "a//b", "./input.fasta", "a\\b", "x\x00y"]
)
def test_file_paths_cannot_leave_the_job(env: Env, path: str) -> None:
    job_id = env.submit(env.world.ann)["id"]
    assert error(env.call("GET", f"/jobs/{job_id}/file", env.world.ann, query={"path": path}), 422)["field"] == "path"


def test_a_missing_file_is_404_locally(tmp_path: Path, keys: Keys) -> None:
    # Local only: on AWS the route presigns without looking, and S3 itself answers 404.
    world = local_world(tmp_path, keys)
    client = asgi_client(world)
    job_id = Env("local", world, client).submit(world.ann)["id"]
    query = {"path": "ranked_0.pdb"}
    reply = client.call("GET", f"/jobs/{job_id}/file", headers={"Authorization": world.ann}, query=query)
    assert error(reply, 404)["field"] == "key"
    close_world(world)


# ==============================================================================================================
# Documentation


@pytest.mark.parametrize("factory", [create_asgi_app, create_lambda_resolver], ids=["local", "lambda"])
def test_openapi_document_validates_and_describes_the_models(factory: Any, tmp_path: Path, keys: Keys) -> None:
    world = local_world(tmp_path, keys)
    doc = json.loads(factory(world).get_openapi_json_schema())
    validate(doc)
    schemas = doc["components"]["schemas"]
    assert {"JobRequest", "JobView", "JobDetail", "JobPage", "ErrorBody"} <= set(schemas)
    post = doc["paths"]["/jobs"]["post"]
    one_or_many = post["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert one_or_many == [{"$ref": "#/components/schemas/JobRequest"},
                           {"type": "array", "items": {"$ref": "#/components/schemas/JobRequest"}}]
    fields = schemas["JobRequest"]["properties"]
    assert {s["type"] for s in fields["model_names"]["anyOf"]} == {"array", "string"}  # both spellings
    assert fields["db_preset"]["enum"] == ["full_dbs", "reduced_dbs"] and "casp14" in fields["preset"]["enum"]
    assert {"model_preset", "models_to_relax", "num_multimer_predictions_per_model"} <= set(fields)
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "Authorization"}
    close_world(world)


def test_openapi_and_swagger_are_served_without_a_key(env: Env) -> None:
    doc = env.call("GET", "/openapi.json")
    assert doc.status == 200 and doc.json()["info"]["title"] == "af2jobs"
    ui = env.call("GET", "/swagger")
    assert ui.status == 200 and "text/html" in ui.headers["content-type"] and "swagger" in ui.text.lower()


def test_asgi_client_helper_sends_what_it_is_given(tmp_path: Path, keys: Keys) -> None:
    # The in-process driver must not hide problems: a request it mangled would make every test above moot.
    world = local_world(tmp_path, keys)
    reply = AsgiClient(create_asgi_app(world)).call(
        "GET", "/jobs", headers={"Authorization": world.ann}, query={"state": "QUEUED", "limit": "1"}
    )
    assert reply.status == 200 and reply.json() == {"jobs": [], "next_token": None}
    close_world(world)


def test_an_anonymous_upload_is_refused_at_its_headers_over_a_socket(tmp_path: Path, keys: Keys) -> None:
    """Through a real socket: the 401 comes back while the client has sent 64 KiB of a declared 250 MB."""
    import socket
    from urllib.parse import urlsplit

    world = local_world(tmp_path, keys)
    with serve(create_asgi_app(world)) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"PUT /uploads?file_name=big.fasta HTTP/1.1\r\nHost: x\r\nContent-Length: 262144000\r\n\r\n"
                         + b"A" * 65536)
            answer = b""
            while b"missing API key" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"missing API key" in answer
    close_world(world)


@pytest.mark.parametrize("drop", ["sig", "expires", "path"])
def test_a_link_missing_a_part_is_refused_naming_that_part_not_a_key(env: Env, drop: str) -> None:
    """A signed link takes no key: one cut short (a mail client wrapped it) says which part is missing."""
    job_id = _succeeded_with(env, "job1/ranked_0.pdb", b"ATOM\n")
    signer = env.world.links
    path, query = _link_query(signer.url(job_id, "output/job1/ranked_0.pdb", signer.expiry()))
    del query[drop]
    body = error(env.call("GET", path, query=query), 422)
    assert body["field"] == drop and "API key" not in body["message"], body


@pytest.mark.parametrize("limit,says", [({"max_job_records": 2}, "3 records; a job takes at most 2 "
                                                                 "(AF2_MAX_JOB_RECORDS)"),
                                        ({"max_job_residues": 90}, "99 residues; a job takes at most 90 "
                                                                   "(AF2_MAX_JOB_RESIDUES)")])
def test_a_job_over_the_records_or_residues_limit_is_refused_with_its_estimate(env: Env, limit, says) -> None:
    env.world.service.settings = env.world.service.settings.model_copy(update=limit)
    fasta = "".join(f">r{i}\n{SEQ}\n" for i in range(3))
    body = error(env.call("POST", "/jobs", env.world.ann, json_body={"fasta": "big", "sequence": fasta}), 422)
    assert body["field"] == "sequence" and says in body["message"], body
    assert "of MSA CPU time" in body["message"] and "$" in body["message"]
    assert env.world.repo.list(None)[0] == []  # nothing stored
    ok = env.call("POST", "/jobs", env.world.ann, json_body={"fasta": "small", "sequence": SEQ})
    assert ok.status == 201, ok.text
