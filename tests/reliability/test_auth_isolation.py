"""Auth and isolation beyond tests/functional/test_api_routes.py (which has the owner/admin/wrong-key matrix over
every route): malformed, revoked, overlong and unicode keys on every route; one owner's key against another's jobs,
files and listings on every route including the bulk ones and paging; keys absent from DEBUG logs and error bodies;
and the secret compared with hmac.compare_digest, in both key stores and through the API."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import pytest

from af2jobs import apikeys, errors
from af2jobs.api.auth import INVALID_KEY, MISSING_KEY
from af2jobs.api.authorizer import UNAUTHORIZED, authorize
from af2jobs.models import JobState
from tests.functional.api_support import Reply
from tests.functional.test_api_routes import JOB_ROUTES, ROUTES, Route, anns_job
from tests.functional.test_api_routes import request as route_request
from tests.reliability.input_support import Env, error, written
from tests.reliability.input_support import aws, env, keys  # noqa: F401 - fixtures

S = JobState
AUTH_EVENT = {"type": "TOKEN", "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/GET/jobs"}


def parts(key: str) -> tuple[str, str]:
    """(key id, secret) of af2_<id>_<secret>; the secret itself may contain '_'."""
    _, key_id, secret = key.split("_", 2)
    return key_id, secret


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def bad_keys(env: Env) -> dict[str, str]:
    """Authorization header values that must all be 401; several are one step from a real key."""
    ann, bob = env.world.ann, env.world.bob
    ann_id, ann_secret = parts(ann)
    bob_id, _ = parts(bob)
    return {
        "empty": "",
        "blank": "   \t ",
        "bearer-alone": "Bearer",
        "bearer-blank": "Bearer    ",
        "basic-auth": "Basic YW5uOnNlY3JldA==",
        "prefix-only": "af2_",
        "no-secret": f"af2_{ann_id}_",
        "secret-too-short": f"af2_{ann_id}_{ann_secret[:19]}",
        "secret-too-long": f"af2_{ann_id}_{ann_secret}{'x' * 200}",
        "upper-case-id": f"af2_{ann_id.upper()}_{ann_secret}",
        "upper-case-prefix": "AF2" + ann[3:],
        "other-owners-id": f"af2_{bob_id}_{ann_secret}",
        "truncated": ann[:-1],
        "one-more-char": ann + "A",
        "doubled": f"{ann} {ann}",
        "bearer-twice": f"Bearer Bearer {ann}",
        "overlong-100k": "af2_" + "0" * 16 + "_" + "b" * 100_000,
        "unicode": f"af2_{ann_id}_{ann_secret[:-1]}\u00e9",
        "fullwidth": fullwidth(ann),
        "rtl-mark": ann + "\u200f",
        "zero-width-space": ann[:12] + "\u200b" + ann[12:],
        "emoji": "\U0001f511" + ann,
        "nul": ann[:12] + "\x00" + ann[12:],
        "crlf-inside": ann[:12] + "\r\n" + ann[12:],
        "sql": "af2_' OR '1'='1' --",
        "revoked": env.world.key.revoked,
    }


def assert_not_leaked(texts: str, *keys: str) -> None:
    for key in keys:
        secret = parts(key)[1] if key.startswith("af2_") and key.count("_") >= 2 else key
        probe = secret[:20]
        assert len(probe) >= 20 and probe not in texts, key


# ==============================================================================================================
# Malformed keys, every route


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_malformed_revoked_overlong_and_unicode_keys_are_401_on_every_route(env: Env, route: Route) -> None:
    job_id = anns_job(env, route)
    before = written(env)
    before_job = env.world.repo.get(job_id)
    for name, key in bad_keys(env).items():
        reply = route_request(env, route, key, job_id)
        body = error(reply, 401)
        assert (body["error"], body["field"]) == ("AuthError", "Authorization"), name
        assert body["message"] == (MISSING_KEY if not key.strip() else INVALID_KEY) or name.startswith("bearer"), name
        assert body["message"] in (MISSING_KEY, INVALID_KEY), name  # fixed texts: nothing about the key sent
        assert reply.headers["www-authenticate"] == 'Bearer realm="af2jobs"'
        if len(key.strip()) >= 20:
            assert key.strip()[-20:] not in reply.text, name  # the key is never echoed
    assert written(env) == before and env.world.repo.get(job_id) == before_job


# ==============================================================================================================
# One owner's key against another owner's jobs


def test_one_owners_key_reaches_nothing_of_another_owner_on_any_route(env: Env) -> None:
    w = env.world
    ann_queued = env.submit(w.ann, fasta="ann-queued")["id"]
    ann_done = env.submit(w.ann, fasta="ann-done")["id"]
    w.store.put_bytes(f"jobs/{ann_done}/ranked_0.pdb", b"ATOM ann's structure")
    w.move(ann_done, S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED)
    bob_queued = env.submit(w.bob, fasta="bob-queued")["id"]
    bob_done = env.submit(w.bob, fasta="bob-done")["id"]
    w.move(bob_done, S.CANCELLED)
    anns_before = {j: w.repo.get(j) for j in (ann_queued, ann_done)}
    ann_files = w.store.list(f"jobs/{ann_done}/") + w.store.list(f"jobs/{ann_queued}/")
    replies: list[Reply] = []

    def call(method: str, path: str, **kw: Any) -> Reply:
        replies.append(env.call(method, path, w.bob, **kw))
        return replies[-1]

    # Every single-job route, for both of ann's jobs: the same 404 as for a job that does not exist.
    unknown = "f" * 32
    for route in JOB_ROUTES:
        missing = error(route_request(env, route, w.bob, unknown), 404)
        for job_id in (ann_queued, ann_done):
            body = error(call(route.method, route.url(job_id), query=dict(route.query)), 404)
            assert body == {**missing, "message": missing["message"].replace(unknown, job_id)}, route
    # Listings: bob's own jobs only, whatever the filter, page size or token (even one from ann's listing).
    def listed(**query: str) -> list[str]:
        reply = call("GET", "/jobs", query=query)
        assert reply.status == 200, reply.text
        return [j["id"] for j in reply.json()["jobs"]]

    assert set(listed()) == {bob_queued, bob_done}
    assert listed(state="SUCCEEDED") == [] and listed(state="QUEUED") == [bob_queued]
    pages, token = [], None
    while True:
        reply = call("GET", "/jobs", query={"limit": "1", **({"next_token": token} if token else {})}).json()
        pages += [j["id"] for j in reply["jobs"]]
        if not (token := reply["next_token"]):
            break
    assert sorted(pages) == sorted([bob_queued, bob_done])
    anns_token = env.call("GET", "/jobs", w.ann, query={"limit": "1"}).json()["next_token"]
    assert set(listed(next_token=anns_token)) <= {bob_queued, bob_done}
    # A path out of bob's own job into ann's is refused before any store access.
    traversal = call("GET", f"/jobs/{bob_queued}/file", query={"path": f"../{ann_done}/ranked_0.pdb"})
    assert error(traversal, 422)["field"] == "path"
    # Bulk routes act on bob's jobs only; asking for everyone's is 403 for a non-admin.
    for method in ("POST", "DELETE"):
        path = "/jobs/cancel" if method == "POST" else "/jobs"
        assert error(call(method, path, query={"all_owners": "true"}), 403)["error"] == "ForbiddenError"
    assert [j["id"] for j in call("POST", "/jobs/cancel").json()["jobs"]] == [bob_queued]
    assert set(call("DELETE", "/jobs").json()["deleted"]) == {bob_queued, bob_done}
    # Ann's jobs and files are exactly as they were.
    assert {j: w.repo.get(j) for j in anns_before} == anns_before
    assert w.store.list(f"jobs/{ann_done}/") + w.store.list(f"jobs/{ann_queued}/") == ann_files
    assert w.store.get_bytes(f"jobs/{ann_done}/ranked_0.pdb") == b"ATOM ann's structure"
    everything = "".join(r.text + json.dumps(r.headers) for r in replies)
    assert "ann's structure" not in everything and ann_queued not in everything.replace(
        f"no job {ann_queued}", "")  # ann's ids appear only in bob's own 404 messages, as he sent them
    assert '"owner":"ann"' not in everything.replace(" ", "")
    assert_not_leaked(everything, w.ann, w.bob, w.admin)


# ==============================================================================================================
# Keys never in logs or error bodies


def test_an_owner_cannot_submit_another_owners_upload(env: Env) -> None:
    """file_name is read from the caller's own folder under input/: bob cannot predict (and so read) ann's file."""
    secret = ">secret ann's unpublished protein\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n"
    env.world.store.put_bytes("input/ann/t1.fasta", secret.encode())
    before = written(env)
    for file_name in ("t1.fasta", "ann/t1.fasta", "../ann/t1.fasta", "%2E%2E/ann/t1.fasta"):
        reply = env.call("POST", "/jobs", env.world.bob, json_body={"fasta": "job1", "file_name": file_name})
        body = error(reply, 404, 422)
        assert body["field"] == "file_name" and "secret" not in reply.text
    assert written(env) == before
    job = env.call("POST", "/jobs", env.world.ann, json_body={"fasta": "job1", "file_name": "t1.fasta"}).json()
    assert env.world.store.get_bytes(f"jobs/{job['id']}/input.fasta").startswith(b">secret")


def test_no_key_reaches_a_log_at_debug_or_a_reply(
    env: Env, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, botocore's and moto's included
    w = env.world
    replies: list[Reply] = []
    for route in ROUTES:
        job_id = anns_job(env, route)
        for key in [*bad_keys(env).values(), w.ann, w.bob, f"Bearer {w.admin}"]:
            replies.append(route_request(env, route, key, job_id))
            # On AWS an upload goes to storage, not through the API: its PUT route answers 400 to a good key.
            refused = env.kind == "lambda" and str(route) == "PUT /uploads" and replies[-1].status == 400
            assert refused or replies[-1].status in {200, 201, 307, 401, 404, 409}, (str(route), replies[-1].text)
    # The authorizer Lambda's core, with a valid and a wrong key.
    authorize({**AUTH_EVENT, "authorizationToken": w.ann}, w.keys)
    with pytest.raises(Exception, match=UNAUTHORIZED):  # noqa: PT011 - API Gateway's contract
        authorize({**AUTH_EVENT, "authorizationToken": w.ann[:-3] + "zzz"}, w.keys)
    out, err = capsys.readouterr()
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    everything = logged + out + err + "".join(r.text + json.dumps(r.headers) for r in replies)
    assert len(caplog.records) > 0  # DEBUG was on and something was logged
    assert_not_leaked(everything, w.ann, w.bob, w.admin, w.key.revoked)


# ==============================================================================================================
# Constant-time comparison


class Recorder:
    """hmac.compare_digest, recording what it compared."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.real = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.real(a, b)


@pytest.fixture
def compare_digest(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(hmac, "compare_digest", recorder)
    return recorder


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every secret hashed, by either store (both hash through af2jobs.apikeys)."""
    seen: list[bytes] = []
    real = apikeys.hash_secret

    def record(secret: str, salt: bytes, kdf: str) -> bytes:
        seen.append(salt)
        return real(secret, salt, kdf)

    monkeypatch.setattr(apikeys, "hash_secret", record)
    return seen


def test_both_stores_compare_the_secret_with_compare_digest(
    env: Env, compare_digest: Recorder, hashes: list[bytes]
) -> None:
    store, ann = env.world.keys, env.world.ann
    key_id, secret = parts(ann)
    apikeys.forget_matches()  # scrypt first; a key that matched is then checked by the SHA-256 of its secret
    wrong = f"af2_{key_id}_{secret[:-2]}{'AB' if not secret.endswith('AB') else 'CD'}"
    cases = {  # name: (key, verifies, scrypt hashes, comparisons)
        "right": (ann, True, 1, 1),
        "right again": (ann, True, 0, 1),
        "wrong secret": (wrong, False, 1, 2),  # the remembered digest differs, so scrypt decides
        "revoked": (env.world.key.revoked, False, 1, 1),
    }
    for name, (key, ok, hashed, compared) in cases.items():
        compare_digest.calls.clear()
        hashes.clear()
        assert (store.verify(key) is not None) is ok, name
        # Comparisons of two 32-byte digests (scrypt, or SHA-256 of a secret that matched before), never of the
        # secret itself, and never with '=='.
        assert len(compare_digest.calls) == compared and len(hashes) == hashed, name
        for a, b in compare_digest.calls:
            assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 32, name
            assert secret.encode() not in (a, b), name
    # An unknown key id costs the same hash (against a dummy salt), so timing does not tell which ids exist.
    compare_digest.calls.clear()
    hashes.clear()
    assert store.verify("af2_" + "0" * 16 + "_" + secret) is None
    assert hashes == [b"\0" * 16] and compare_digest.calls == []
    # A key that is not even well formed is refused before any lookup: nothing secret-dependent runs.
    hashes.clear()
    assert store.verify("af2_nonsense") is None and hashes == [] and compare_digest.calls == []


def test_the_api_compares_the_callers_key_with_compare_digest(env: Env, compare_digest: Recorder) -> None:
    apikeys.forget_matches()
    wrong = env.world.ann[:-2] + ("AB" if not env.world.ann.endswith("AB") else "CD")
    assert error(env.call("GET", "/jobs", wrong), 401)["field"] == "Authorization"
    assert len(compare_digest.calls) == 1
    assert env.call("GET", "/jobs", env.world.ann).status == 200
    assert len(compare_digest.calls) == 2


def test_the_authorizer_refuses_without_telling_why(env: Env) -> None:
    event = AUTH_EVENT
    allowed = authorize({**event, "authorizationToken": env.world.ann}, env.world.keys)
    assert allowed["principalId"] == "ann" and allowed["context"] == {"owner": "ann", "admin": False}
    for key in bad_keys(env).values():
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the contract is a bare Exception("Unauthorized")
            authorize({**event, "authorizationToken": key}, env.world.keys)
        assert str(caught.value) == UNAUTHORIZED and not isinstance(caught.value, errors.Af2JobsError)
