"""The original platform's routes (GET, POST, DELETE and CANCEL on / and /{id}), answered as it answered them:
through a real HTTP client on a real socket to the server `af2 serve` runs (CANCEL included, also on a connection
kept alive), and through the Lambda resolver fed API Gateway events (ANY carries CANCEL there)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from af2jobs.api.app import create_asgi_app
from af2jobs.models import JobState
from tests.functional.api_support import (  # noqa: F401 - aws and keys are fixtures
    SEQ, Keys, World, aws, aws_world, close_world, keys, lambda_client, local_world, serve,
)

S = JobState
ITEM_FIELDS = {"id", "fasta", "fasta_seq", "file_name", "job_id", "job_status", "model_preset", "db_preset",
               "num_multimer_predictions_per_model", "max_template_date", "que", "time", "gpu", "comment",
               "models_to_relax"}
# The original platform's request file: an array of jobs (sampleParameters.json's form), here inline.
JOBS = [{"fasta": "first", "sequence": f">a\n{SEQ}\n", "model_preset": "monomer", "db_preset": "reduced_dbs",
         "que": "low", "gpu": 1, "comment": "one"},
        {"fasta": "second", "sequence": SEQ, "model_preset": "monomer_ptm", "models_to_relax": "none"}]


class Http:
    """One kept-alive connection to the server, as a client of the original platform holds one."""

    def __init__(self, url: str, key: str | None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.key = key

    def raw(self, method: str, path: str) -> tuple[int, bytes]:
        self.conn.request(method, path, headers={"Authorization": self.key} if self.key else {})
        reply = self.conn.getresponse()
        return reply.status, reply.read()

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": self.key} if self.key else {}
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data, headers=headers)
        reply = self.conn.getresponse()
        return reply.status, json.loads(reply.read())


@pytest.fixture
def world(tmp_path: Path, keys: Keys) -> Iterator[World]:
    w = local_world(tmp_path, keys)
    yield w
    close_world(w)


@pytest.fixture
def call(world: World) -> Iterator[Http]:
    with serve(create_asgi_app(world)) as url:
        client = Http(url, world.ann)
        yield client
        client.conn.close()


def test_a_client_of_the_original_platform_submits_lists_cancels_and_deletes(call: Http, world: World) -> None:
    status, posted = call("POST", "/", JOBS)
    assert (status, posted["code"], posted["message"]) == (200, 200, "OK,POSTED")
    first, second = posted["data"]
    assert ITEM_FIELDS <= set(first) and first["job_status"] == "QUEUED" and first["fasta_seq"] == SEQ
    assert (first["model_preset"], first["db_preset"], first["que"], first["comment"]) == (
        "monomer", "reduced_dbs", "low", "one")
    assert "GET /jobs" in call("GET", "/")[1]["api"]

    status, listed = call("GET", "/")
    assert listed["code"] == 200 and {i["id"] for i in listed["data"]} == {first["id"], second["id"]}
    status, one = call("GET", f"/{first['id']}")
    assert (one["code"], one["message"], one["data"]["id"]) == (200, "Job is QUEUED,Please wait", first["id"])

    # CANCEL on the connection that already carried four requests: the verb is read wherever it comes.
    status, cancelled = call("CANCEL", f"/{first['id']}")
    assert (status, cancelled["code"], cancelled["message"]) == (200, 200, "OK,CANCELING")
    assert world.repo.get(first["id"]).state is S.CANCELLED
    assert call("CANCEL", f"/{first['id']}")[1] == {
        "code": 400, "message": "You can't CANCEL a CANCELLED job, please use DELETE method.",
        "api": f"the original platform's route; af2jobs' own: POST /jobs/{first['id']}/cancel (see /openapi.json)"}
    assert call("DELETE", f"/{second['id']}")[1]["message"] == \
        "You can't DELETE a QUEUED job, please use CANCEL method."

    status, all_cancelled = call("CANCEL", "/")
    assert all_cancelled["message"] == "OK,CANCELING all." and [i["id"] for i in all_cancelled["data"]] == [
        second["id"]]
    status, deleted = call("DELETE", f"/{first['id']}")
    assert (deleted["code"], deleted["message"], deleted["data"]["id"]) == (200, "OK,DELETING", first["id"])
    status, rest = call("DELETE", "/")
    assert rest["message"] == "OK,DELETING all." and [i["id"] for i in rest["data"]] == [second["id"]]
    assert call("GET", "/")[1] == {"code": 200, "message": "OK, but no job was deployed.",
                                   "api": "the original platform's route; af2jobs' own: GET /jobs (see "
                                          "/openapi.json)"}


def test_the_original_platforms_refusals(call: Http, world: World) -> None:
    unknown = "0" * 32
    assert call("GET", f"/{unknown}")[1]["code"] == 404
    assert call("GET", f"/{unknown}")[1]["message"] == "Wrong id!Please remove the id after url to scan all ids."
    assert call("DELETE", f"/{unknown}")[1]["message"] == "No such job id to terminate."
    assert call("CANCEL", f"/{unknown}")[1]["message"] == "No such job id to terminate."
    assert call("PUT", "/", {})[1] == {"code": 400, "message": "No such method.",
                                       "api": "the original platform's route; af2jobs' own: /openapi.json (see "
                                              "/openapi.json)"}
    bad = call("POST", "/", [{"fasta": "x", "sequence": SEQ, "model_preset": "tetramer"}])[1]
    assert bad["code"] == 400 and bad["message"].startswith("element 0: model_preset must be one of")
    assert call("POST", "/", "not jobs")[1]["code"] == 400
    assert world.repo.list(None)[0] == []  # nothing stored
    status, body = Http(call.url, None)("CANCEL", "/")
    assert status == 401 and body["error"] == "AuthError"  # no key: refused as on every route


def test_a_failed_job_is_code_500_with_its_reason_and_a_succeeded_one_links_its_report(call: Http,
                                                                                         world: World) -> None:
    from af2jobs.models import JobError

    failed, done = (call("POST", "/", [job])[1]["data"][0]["id"] for job in JOBS)
    world.repo.transition(failed, {S.QUEUED}, S.FAILED, error=JobError(type="StageError", message="msa: boom",
                                                                         stage="msa"))
    key = f"jobs/{done}/output/second/report.html"
    world.store.put_bytes(key, b"<html>")
    world.move(done, S.VALIDATING, S.MSA, S.PREDICTING)
    world.repo.transition(done, {S.PREDICTING}, S.SUCCEEDED, artifacts={"second/report.html": key},
                          cost={"msa_s": 10.0, "predict_s": 5.5})
    body = call("GET", f"/{failed}")[1]
    assert (body["code"], body["message"], body["data"]["failed_Reason"]) == (500, "Job is FAILED. msa: boom",
                                                                              "msa: boom")
    body = call("GET", f"/{done}")[1]
    assert (body["code"], body["message"], body["data"]["cost"]) == (200, "Job is SUCCEEDED.", 15.5)
    assert call.raw("GET", body["data"]["s3_url"]) == (200, b"<html>")


def test_the_lambda_answers_the_cancel_verb_that_api_gateways_any_method_carries(aws, tmp_path: Path) -> None:
    world = aws_world(aws, tmp_path)
    client = lambda_client(world)
    key = {"Authorization": world.ann}
    posted = client.call("POST", "/", json_body=JOBS, headers=key).json()
    assert posted["message"] == "OK,POSTED"
    job_id = posted["data"][0]["id"]
    reply = client.call("CANCEL", f"/{job_id}", headers=key)
    assert reply.status == 200 and reply.json()["message"] == "OK,CANCELING"
    assert world.repo.get(job_id).state is S.CANCELLED
    assert client.call("GET", "/", headers=key).json()["code"] == 200
