"""Malformed submissions through the real API: every one is refused with a 4xx whose body names the field at fault,
and none writes anything (no job record, no stored object, no file, no start, no notification, listing unchanged).

The JSON cases run against both forms of the API (local ASGI app on SQLite and a directory; Lambda resolver on
DynamoDB and S3 under moto). The raw-byte cases run against the local app, which reads bytes off the socket; API
Gateway hands the Lambda text or base64, covered by its own cases at the end. A few cases go through `af2 submit`
against a real local server. Values that are legitimately accepted (text in `comment`) are stored verbatim and
escaped where report.html shows them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from af2jobs.api.app import create_asgi_app
from af2jobs.cli.main import main
from af2jobs.fasta import FastaRecord
from af2jobs.models import Principal
from af2jobs.request import MAX_COMMENT
from af2jobs.pipeline.report import render_html
from tests.functional import api_support
from tests.functional.api_support import MAX_BODY, asgi_client, close_world, local_world, rest_event, serve
from tests.reliability.input_support import SEQ, Env, body_of, error, written
from tests.reliability.input_support import aws, env, keys, lambda_env, local_env  # noqa: F401 - fixtures

JOB = {"fasta": "job1", "sequence": SEQ}
DROP = object()  # remove the field from the request


@dataclass(frozen=True)
class Case:
    id: str
    group: str  # the class of bad input, for docs/reliability.md
    change: dict[str, Any] | bytes  # fields over JOB (DROP removes one), or the whole raw body
    status: int
    field: str | None
    says: str  # a phrase of the message
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        if isinstance(self.change, bytes):
            return self.change
        return body_of({k: v for k, v in {**JOB, **self.change}.items() if v is not DROP})


NAME_RULE = "fasta (the job name) must be 1-100 characters"
NOT_FIELD = "is not a request field"
NOT_AMINO = "is not an amino-acid letter"
TRAVERSAL = "must not contain '..'"
TOO_LONG = "longer than the maximum of 2500"
# Where a record named ../../etc/passwd would be written: a name of its own, which a second record may not take.
TRAVERSAL_SLUG = FastaRecord("../../etc/passwd", "", "", 1).slug

# ---------------------------------------------------------------------------------------------------------------
# JSON cases: each a valid JSON object with one thing wrong

FIELD_CASES = [
    # wrong JSON types, each field
    Case("fasta-null", "wrong type", {"fasta": None}, 422, "fasta", NAME_RULE),
    Case("fasta-int", "wrong type", {"fasta": 7}, 422, "fasta", NAME_RULE),
    Case("fasta-list", "wrong type", {"fasta": ["job1"]}, 422, "fasta", NAME_RULE),
    Case("fasta-missing", "wrong type", {"fasta": DROP}, 422, "fasta", "fasta is required"),
    Case("sequence-int", "wrong type", {"sequence": 12}, 422, "sequence", "sequence must be non-empty"),
    Case("sequence-list", "wrong type", {"sequence": [SEQ]}, 422, "sequence", "sequence must be non-empty"),
    Case("sequence-object", "wrong type", {"sequence": {"seq": SEQ}}, 422, "sequence", "sequence must be non-empty"),
    Case("file_name-int", "wrong type", {"sequence": DROP, "file_name": 3}, 422, "file_name", "must be a string"),
    Case("file_name-list", "wrong type", {"sequence": DROP, "file_name": ["a"]}, 422, "file_name", "string"),
    Case("no-input", "wrong type", {"sequence": DROP}, 422, "body", "exactly one of file_name"),
    Case("model_names-string", "wrong type", {"model_names": "model_1,model_9"}, 422, "model_names", "unknown models"),
    Case("model_names-empty", "wrong type", {"model_names": []}, 422, "model_names", "non-empty list"),
    Case("model_names-ints", "wrong type", {"model_names": [1, 2]}, 422, "model_names", "unknown models"),
    Case("model_names-nested", "wrong type", {"model_names": [["model_1"]]}, 422, "model_names", "unknown models"),
    Case("model_names-repeat", "wrong type", {"model_names": ["model_1"] * 2}, 422, "model_names", "repeat"),
    Case("preset-int", "wrong type", {"preset": 1}, 422, "preset", "preset must be one of"),
    Case("preset-list", "wrong type", {"preset": ["full"]}, 422, "preset", "preset must be one of"),
    Case("date-int", "wrong type", {"max_template_date": 20200101}, 422, "max_template_date", "YYYY-MM-DD"),
    Case("date-bool", "wrong type", {"max_template_date": True}, 422, "max_template_date", "YYYY-MM-DD"),
    Case("date-datetime", "wrong type", {"max_template_date": "2020-01-01T00:00:00"}, 422, "max_template_date",
         "YYYY-MM-DD"),
    Case("date-feb-30", "wrong type", {"max_template_date": "2020-02-30"}, 422, "max_template_date", "YYYY-MM-DD"),
    Case("date-future", "huge number", {"max_template_date": "9999-12-31"}, 422, "max_template_date", "future"),
    Case("que-int", "wrong type", {"que": 2}, 422, "que", "que must be one of"),
    Case("que-list", "wrong type", {"que": ["low"]}, 422, "que", "que must be one of"),
    Case("comment-int", "wrong type", {"comment": 5}, 422, "comment", "comment must be text"),
    Case("comment-null", "wrong type", {"comment": None}, 422, "comment", "comment must be text"),
    Case("comment-object", "wrong type", {"comment": {"a": "b"}}, 422, "comment", "comment must be text"),
    Case("comment-too-long", "huge number", {"comment": "c" * (MAX_COMMENT + 1)}, 422, "comment", "at most 1000"),
    Case("gpu-string", "wrong type", {"gpu": "1"}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("gpu-float", "wrong type", {"gpu": 1.5}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("gpu-bool", "wrong type", {"gpu": True}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("gpu-null", "wrong type", {"gpu": None}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("strategy-int", "wrong type", {"strategy": 1}, 422, "strategy", "stop-at-score"),
    Case("strategy-list", "wrong type", {"strategy": ["best"]}, 422, "strategy", "stop-at-score"),
    # huge and negative numbers
    Case("gpu-huge", "huge number", {"gpu": 10**40}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("gpu-negative", "huge number", {"gpu": -1}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("gpu-zero", "huge number", {"gpu": 0}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("gpu-1e308", "huge number", {"gpu": 1e308}, 422, "gpu", "gpu must be an integer from 1 to 8"),
    Case("score-negative", "huge number", {"strategy": "stop-at-score:-5"}, 422, "strategy", "0 < X <= 100"),
    Case("score-huge", "huge number", {"strategy": "stop-at-score:1e400"}, 422, "strategy", "0 < X <= 100"),
    Case("score-nan", "huge number", {"strategy": "stop-at-score:nan"}, 422, "strategy", "0 < X <= 100"),
    Case("score-inf", "huge number", {"strategy": "stop-at-score:inf"}, 422, "strategy", "0 < X <= 100"),
    Case("name-101-chars", "huge number", {"fasta": "a" * 101}, 422, "fasta", NAME_RULE),
    # extra unknown fields, including ones that would matter if they were honoured
    Case("extra-owner", "unknown field", {"owner": "bob"}, 422, "owner", NOT_FIELD),
    Case("extra-admin", "unknown field", {"admin": True}, 422, "admin", NOT_FIELD),
    Case("extra-id", "unknown field", {"id": "0" * 32}, 422, "id", NOT_FIELD),
    Case("extra-state", "unknown field", {"state": "SUCCEEDED"}, 422, "state", NOT_FIELD),
    Case("extra-idempotency", "unknown field", {"idempotency_key": "k"}, 422, "idempotency_key", NOT_FIELD),
    Case("extra-proto", "unknown field", {"__proto__": {"admin": True}}, 422, "__proto__", NOT_FIELD),
    # path traversal in the job name and in file_name
    Case("name-dotdot", "path traversal", {"fasta": "../etc"}, 422, "fasta", NAME_RULE),
    Case("name-dotdot-only", "path traversal", {"fasta": ".."}, 422, "fasta", NAME_RULE),
    Case("name-absolute", "path traversal", {"fasta": "/etc/passwd"}, 422, "fasta", NAME_RULE),
    Case("name-url-encoded", "path traversal", {"fasta": "%2e%2e%2fetc"}, 422, "fasta", NAME_RULE),
    Case("name-backslash", "path traversal", {"fasta": "..\\windows"}, 422, "fasta", NAME_RULE),
    Case("name-slash", "path traversal", {"fasta": "a/b"}, 422, "fasta", NAME_RULE),
    Case("file-dotdot", "path traversal", {"sequence": DROP, "file_name": "../etc/passwd"}, 422, "file_name",
         TRAVERSAL),
    Case("file-inner-dotdot", "path traversal", {"sequence": DROP, "file_name": "lab/../../jobs/x"}, 422,
         "file_name", TRAVERSAL),
    Case("file-absolute", "path traversal", {"sequence": DROP, "file_name": "/etc/passwd"}, 422, "file_name",
         "not start with '/'"),
    Case("file-backslash", "path traversal", {"sequence": DROP, "file_name": "..\\..\\boot.ini"}, 422,
         "file_name", "backslashes"),
    Case("file-windows-drive", "path traversal", {"sequence": DROP, "file_name": "C:\\Windows\\x"}, 422,
         "file_name", "backslashes"),
    Case("file-dot", "path traversal", {"sequence": DROP, "file_name": "./a.fasta"}, 422, "file_name", TRAVERSAL),
    Case("file-empty-segment", "path traversal", {"sequence": DROP, "file_name": "a//b"}, 422, "file_name",
         TRAVERSAL),
    Case("file-empty", "path traversal", {"sequence": DROP, "file_name": ""}, 422, "file_name", "not be empty"),
    Case("file-nul", "path traversal", {"sequence": DROP, "file_name": "a\x00.fasta"}, 422, "file_name",
         "control characters"),
    # Not a traversal once decoded by nobody: the literal name is looked up under input/ann/ and is not there.
    Case("file-url-encoded", "path traversal", {"sequence": DROP, "file_name": "%2e%2e/%2e%2e/etc/passwd"}, 404,
         "file_name", "no object input/ann/%2e%2e/%2e%2e/etc/passwd"),
    Case("file-fullwidth-slash", "path traversal", {"sequence": DROP, "file_name": "..\uff0fetc"}, 404,
         "file_name", "no object input/ann/"),
    # shell and SQL metacharacters in the name (the comment takes them as text: see the accepted cases)
    Case("name-semicolon", "shell", {"fasta": "a;rm -rf ~"}, 422, "fasta", NAME_RULE),
    Case("name-subshell", "shell", {"fasta": "$(id)"}, 422, "fasta", NAME_RULE),
    Case("name-backtick", "shell", {"fasta": "`id`"}, 422, "fasta", NAME_RULE),
    Case("name-pipe", "shell", {"fasta": "a|b"}, 422, "fasta", NAME_RULE),
    Case("name-option", "shell", {"fasta": "-rf"}, 422, "fasta", NAME_RULE),
    Case("name-quote-or", "sql", {"fasta": "a' OR '1'='1"}, 422, "fasta", NAME_RULE),
    Case("name-drop-table", "sql", {"fasta": "x');DROP TABLE jobs;--"}, 422, "fasta", NAME_RULE),
    Case("name-comment-dashes", "sql", {"fasta": "a--"}, 0, None, ""),  # legal: letters, digits, '-' (accepted)
    # unicode in the name
    Case("name-accented", "unicode", {"fasta": "protéine"}, 422, "fasta", NAME_RULE),
    Case("name-greek", "unicode", {"fasta": "\u03b1-helix"}, 422, "fasta", NAME_RULE),
    Case("name-emoji", "unicode", {"fasta": "job\U0001f9ec"}, 422, "fasta", NAME_RULE),
    Case("name-rtl-override", "unicode", {"fasta": "job\u202egpj"}, 422, "fasta", NAME_RULE),
    Case("name-combining", "unicode", {"fasta": "jo\u0301b"}, 422, "fasta", NAME_RULE),
    Case("name-fullwidth", "unicode", {"fasta": "\uff4a\uff4f\uff42"}, 422, "fasta", NAME_RULE),
    Case("name-zero-width", "unicode", {"fasta": "job\u200b1"}, 422, "fasta", NAME_RULE),
    Case("name-lone-surrogate", "unicode", {"fasta": "job\ud800"}, 422, "fasta", NAME_RULE),
    # unicode and other text in the sequence
    Case("seq-rtl-mark", "unicode", {"sequence": SEQ[:10] + "\u200f" + SEQ[10:]}, 422, "sequence", "U+200F"),
    Case("seq-rtl-override", "unicode", {"sequence": SEQ[:10] + "\u202e" + SEQ[10:]}, 422, "sequence", "U+202E"),
    Case("seq-combining", "unicode", {"sequence": "A\u0301" + SEQ}, 422, "sequence", "U+0301"),
    Case("seq-emoji", "unicode", {"sequence": SEQ + "\U0001f9ec"}, 422, "sequence", "U+1F9EC"),
    Case("seq-fullwidth", "unicode", {"sequence": "".join(chr(ord(c) + 0xFEE0) for c in SEQ)}, 422, "sequence",
         "FULLWIDTH LATIN CAPITAL LETTER M"),
    Case("seq-greek-alpha", "unicode", {"sequence": SEQ + "\u0391"}, 422, "sequence", "GREEK CAPITAL LETTER ALPHA"),
    Case("seq-dotless-i", "unicode", {"sequence": SEQ + "\u0131"}, 422, "sequence", "LATIN SMALL LETTER DOTLESS I"),
    Case("seq-lone-surrogate", "unicode", {"sequence": "\udc00" + SEQ}, 422, "sequence", "lone surrogate"),
    Case("comment-lone-surrogate", "unicode", {"comment": "ok\ud83d"}, 422, "comment", "lone surrogate"),
    Case("seq-nul", "binary", {"sequence": SEQ[:5] + "\x00" + SEQ[5:]}, 422, "sequence", "U+0000 (NUL)"),
    Case("seq-escape", "binary", {"sequence": ">a\n\x1b[31m" + SEQ}, 422, "sequence", "U+001B (ESC)"),
    Case("seq-gzip-as-text", "binary", {"sequence": "\x1f\x8b\x08\x00" + SEQ}, 422, "sequence", "control character"),
    Case("seq-c1-control", "binary", {"sequence": SEQ + "\x85"}, 422, "sequence", "U+0085"),
    # empty and blank input
    Case("seq-empty", "empty", {"sequence": ""}, 422, "sequence", "sequence must be non-empty"),
    Case("seq-whitespace", "empty", {"sequence": " \n\t\r\n "}, 422, "sequence", "sequence must be non-empty"),
    Case("seq-header-only", "empty", {"sequence": ">a\n"}, 422, "sequence", "record has no sequence"),
    Case("seq-comments-only", "empty", {"sequence": "; nothing\n; here\n"}, 422, "sequence", "record has no sequence"),
    Case("name-empty", "empty", {"fasta": ""}, 422, "fasta", NAME_RULE),
    # FASTA that is something else, or broken
    Case("seq-html", "html", {"sequence": "<script>alert(1)</script>"}, 422, "sequence", NOT_AMINO),
    Case("seq-html-page", "html", {"sequence": "<html>\n<body>MKT</body>\n</html>"}, 422, "sequence",
         "line 2, column 1: '<' is not an amino-acid letter"),  # a bare text gets a header line first
    Case("seq-html-with-header", "html", {"sequence": f">a\n<b>{SEQ}</b>\n"}, 422, "sequence",
         "line 2, column 1: '<' is not an amino-acid letter"),
    Case("seq-json", "wrong format", {"sequence": '{"sequence": "MKT"}'}, 422, "sequence", "'{' is not an amino-acid"),
    Case("seq-genbank", "wrong format", {"sequence": ">x\nLOCUS       AB000263\n"}, 422, "sequence",
         "'O' is an ambiguous"),
    Case("seq-sql", "sql", {"sequence": "'; DROP TABLE jobs; --"}, 422, "sequence", NOT_AMINO),
    Case("seq-shell", "shell", {"sequence": "$(rm -rf /)"}, 422, "sequence", NOT_AMINO),
    Case("seq-digit", "wrong format", {"sequence": SEQ + "1"}, 422, "sequence", "'1' is not an amino-acid letter"),
    Case("seq-gap", "wrong format", {"sequence": SEQ + "-"}, 422, "sequence", "alignment gap"),
    Case("seq-ambiguous", "wrong format", {"sequence": SEQ + "B"}, 422, "sequence", "ambiguous"),
    Case("seq-stop-inside", "wrong format", {"sequence": SEQ[:5] + "*" + SEQ[5:]}, 422, "sequence", "'*' (stop)"),
    Case("seq-too-short", "wrong format", {"sequence": "MKT"}, 422, "sequence", "shorter than the minimum"),
    Case("seq-too-long", "huge number", {"sequence": "A" * 2501}, 422, "sequence", TOO_LONG),
    Case("seq-duplicate-names", "wrong format", {"sequence": f">a\n{SEQ}\n>a\n{SEQ}\n"}, 422, "sequence",
         "duplicate record name"),
    Case("seq-clashing-slugs", "path traversal", {"sequence": f">a/b\n{SEQ}\n>a_b\n{SEQ}\n"}, 422, "sequence",
         "would both be stored as 'a_b'"),
    Case("seq-header-traversal", "path traversal",
         {"sequence": f">../../etc/passwd\n{SEQ}\n>{TRAVERSAL_SLUG}\n{SEQ}\n"}, 422, "sequence",
         f"would both be stored as '{TRAVERSAL_SLUG}'"),
    Case("seq-before-header", "wrong format", {"sequence": f"{SEQ}\n>b\n{SEQ}\n"}, 422, "sequence",
         "sequence line before the first header"),
    # headers
    Case("idempotency-key-too-long", "huge number", {}, 422, "idempotency-key", "idempotency-key",
         headers={"Idempotency-Key": "k" * 201}),
]
REFUSED = [c for c in FIELD_CASES if c.status]


def assert_refused(env: Env, reply: Any, case: Case) -> None:
    body = error(reply, case.status)
    assert reply.status < 500
    if case.field is None:
        assert body["field"] is None, body
    else:
        assert (body["field"] or "").lower() == case.field, body
    assert case.says in body["message"], body


def assert_nothing_written(env: Env, before: Any) -> None:
    assert written(env) == before
    # The listing as GET /jobs computes it (without a second request: each one costs a deliberately slow hash).
    assert env.world.service.list(Principal(owner="ann"))[0] == []


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_bad_json_field_is_4xx_named_and_writes_nothing(env: Env, case: Case) -> None:
    before = written(env)
    reply = env.call("POST", "/jobs", env.world.ann, body=case.body(),
                     headers={"Content-Type": "application/json", **case.headers})
    assert_refused(env, reply, case)
    assert_nothing_written(env, before)


# ---------------------------------------------------------------------------------------------------------------
# Raw bodies: bytes as they arrive at the local server

NUL = b"\x00"
RAW_CASES = [
    Case("binary-all-bytes", "binary", bytes(range(256)), 400, "body", "not UTF-8 text (byte 0x80 at byte offset 128)"),
    Case("nul-byte", "binary", NUL, 400, "body", "not valid JSON"),
    Case("nul-inside-json", "binary", b'{"fasta": "job1",' + NUL + b'"sequence": "' + SEQ.encode() + b'"}', 400,
         "body", "not valid JSON"),
    Case("latin1-json", "binary", '{"fasta": "prot\xe9ine", "sequence": "MKT"}'.encode("latin-1"), 400, "body",
         "not UTF-8 text (byte 0xe9"),
    Case("utf16-json", "unicode", json.dumps(JOB).encode("utf-16"), 400, "body", "not UTF-8 text (byte 0xff"),
    Case("gzip-body", "binary", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 400, "body", "not UTF-8 text"),
    Case("bom-json", "unicode", b"\xef\xbb\xbf" + json.dumps(JOB).encode(), 400, "body", "BOM"),
    Case("empty-body", "empty", b"", 422, "body", "body is required"),
    Case("whitespace-body", "empty", b" \r\n\t ", 400, "body", "not valid JSON"),
    Case("truncated-json", "wrong format", b'{"fasta": "job1", "sequence": "MKT', 400, "body", "not valid JSON"),
    Case("json-null", "wrong type", b"null", 422, "body", "body is required"),
    Case("json-number", "wrong type", b"42", 422, "body", "valid dictionary"),
    Case("json-string", "wrong type", b'"job1"', 422, "body", "valid dictionary"),
    Case("json-array-empty", "wrong type", b"[]", 422, "body", "holds no job"),
    Case("json-array-of-a-number", "wrong type", json.dumps([JOB, 5]).encode(), 422, "[1]", "valid dictionary"),
    Case("json-true", "wrong type", b"true", 422, "body", "valid dictionary"),
    Case("nested-arrays", "huge number", b"[" * 1500 + b"]" * 1500, 400, "body", "nested too deeply"),
    Case("nested-in-a-field", "huge number", b'{"fasta":' + b"[" * 1400 + b"]" * 1400 + b"}", 400, "body",
         "nested too deeply"),
    Case("nan-literal", "huge number", b'{"fasta":"j","sequence":"%s","gpu":NaN}' % SEQ.encode(), 422, "gpu",
         "gpu must be an integer"),
    Case("infinity-literal", "huge number", b'{"fasta":"j","sequence":"%s","gpu":-Infinity}' % SEQ.encode(), 422,
         "gpu", "gpu must be an integer"),
    Case("over-the-limit", "over the limit", b'{"fasta": "job1", "comment": "' + b"x" * MAX_BODY + b'"}', 413,
         "body", f"larger than {MAX_BODY:,} bytes"),
    Case("over-the-limit-binary", "over the limit", bytes(range(256)) * (MAX_BODY // 256 + 1), 413, "body",
         "AF2_MAX_REQUEST_BYTES"),
    Case("form-encoded", "wrong format", b"fasta=job1&sequence=MKT", 415, "body", "send the body as JSON",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Case("multipart-no-boundary", "wrong format", b"fasta=job1", 415, "body", "send the body as JSON",
         headers={"Content-Type": "multipart/form-data"}),
    Case("multipart", "wrong format", b"--x\r\nContent-Disposition: form-data; name=\"fasta\"\r\n\r\njob1\r\n--x--\r\n",
         415, "body", "send the body as JSON", headers={"Content-Type": "multipart/form-data; boundary=x"}),
    Case("text-plain", "wrong format", f">a\n{SEQ}\n".encode(), 415, "body", "send the body as JSON",
         headers={"Content-Type": "text/plain"}),
]


@pytest.mark.parametrize("case", RAW_CASES, ids=lambda c: c.id)
def test_bad_raw_body_is_4xx_named_and_writes_nothing(local_env: Env, case: Case) -> None:
    before = written(local_env)
    headers = {"Content-Type": "application/json", **case.headers}
    reply = local_env.call("POST", "/jobs", local_env.world.ann, body=case.body(), headers=headers)
    assert_refused(local_env, reply, case)
    assert_nothing_written(local_env, before)


def test_an_integer_longer_than_python_converts_is_400(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int('9' * 4301) raises ValueError (sys.get_int_max_str_digits), not JSONDecodeError: within the default
    1 MiB limit, but not within the 4 KiB one the other tests use."""
    monkeypatch.setattr(api_support, "MAX_BODY", 1 << 20)
    world = local_world(tmp_path, keys)
    env = Env("local", world, asgi_client(world), tmp_path)
    before = written(env)
    raw = b'{"fasta":"j","sequence":"%s","gpu":9%s}' % (SEQ.encode(), b"9" * 4400)
    reply = env.call("POST", "/jobs", world.ann, body=raw, headers={"Content-Type": "application/json"})
    body = error(reply, 400)
    assert body["field"] == "body" and "Exceeds the limit (4300 digits)" in body["message"]
    assert_nothing_written(env, before)
    close_world(world)


def test_body_that_is_not_utf8_behind_api_gateway_is_400(lambda_env: Env) -> None:
    """API Gateway passes a body it cannot treat as text base64-encoded; decoding it must not be a 500."""
    env = lambda_env
    before = written(env)
    for raw in (bytes(range(256)), json.dumps(JOB).encode("utf-16"), b"[" * 1500 + b"]" * 1500):
        event = rest_event("POST", "/jobs", headers={"Authorization": env.world.ann,
                                                   "Content-Type": "application/json"})
        event.update(body=base64.b64encode(raw).decode(), isBase64Encoded=True)
        body = error(env.client.invoke(event), 400)  # type: ignore[attr-defined]
        assert body["field"] == "body"
    assert_nothing_written(env, before)


def test_key_is_checked_before_a_bad_body_is_read(env: Env) -> None:
    """An anonymous caller learns nothing about its input (except the local server's size and UTF-8 checks,
    which come before anything else is read)."""
    for case in [c for c in FIELD_CASES if c.status == 422][:10]:
        reply = env.call("POST", "/jobs", None, body=case.body(), headers={"Content-Type": "application/json"})
        assert error(reply, 401)["field"] == "Authorization"


# ---------------------------------------------------------------------------------------------------------------
# Accepted as given: text in the comment, names with '-' and '.'

ACCEPTED_COMMENTS = {
    "html": '<script>alert("x")</script><img src=x onerror=alert(1)>',
    "shell": "$(rm -rf ~); `id` | tee /etc/passwd && echo pwned > /dev/sda",
    "sql": "'; DROP TABLE jobs; -- \" OR 1=1",
    "unicode": "prot\u00e9ine \u03b1-h\u00e9lice \U0001f9ec \u202eevil\u202c "
               "\u0627\u0644\u0628\u0631\u0648\u062a\u064a\u0646 e\u0301",
    "traversal": "../../etc/passwd C:\\Windows %2e%2e%2f",
    "fullwidth": "\uff21\uff22\uff23",
}


@pytest.mark.parametrize("kind", sorted(ACCEPTED_COMMENTS))
def test_comment_is_text_stored_verbatim(env: Env, kind: str) -> None:
    comment = ACCEPTED_COMMENTS[kind]
    job = env.submit(env.world.ann, comment=comment)
    assert job["request"]["comment"] == comment
    assert env.world.repo.get(job["id"]).request.comment == comment
    shown = env.call("GET", f"/jobs/{job['id']}", env.world.ann)
    assert shown.headers["content-type"].startswith("application/json")
    assert shown.json()["request"]["comment"] == comment
    assert env.call("GET", "/jobs", env.world.ann).json()["jobs"][0]["id"] == job["id"]  # the table is intact


def test_a_name_of_letters_digits_dots_dashes_is_accepted(env: Env) -> None:
    accepted = [c for c in FIELD_CASES if not c.status]
    for case in accepted:
        reply = env.call("POST", "/jobs", env.world.ann, body=case.body(), headers={"Content-Type": "application/json"})
        assert reply.status == 201, reply.text


def test_report_escapes_the_comment_a_job_was_submitted_with(env: Env) -> None:
    comment = ACCEPTED_COMMENTS["html"]
    job = env.world.repo.get(env.submit(env.world.ann, comment=comment)["id"])
    data = {"versions": {}, "confidence": {}, "plddt": [], "best": None, "order": [], "pdb": "", "timings": {}}
    page = render_html(job.request.fasta, data, {}, comment=job.request.comment)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page


# ---------------------------------------------------------------------------------------------------------------
# The same through `af2 submit` against a real local server


CLI_CASES = {
    "binary": (bytes(range(256)), [], "is not UTF-8 text"),
    "utf16": (f">a\n{SEQ}\n".encode("utf-16"), [], "is not UTF-8 text"),
    "empty": (b"", [], "sequence must be non-empty"),
    "nul": (f">a\n{SEQ[:4]}\x00{SEQ[4:]}\n".encode(), [], "U+0000 (NUL)"),
    "emoji": (f">a\n{SEQ}\U0001f9ec\n".encode(), [], "U+1F9EC"),
    "name-traversal": (f">a\n{SEQ}\n".encode(), ["--name", "../../etc"], "fasta (the job name)"),
    "name-shell": (f">a\n{SEQ}\n".encode(), ["--name", "$(id)"], "fasta (the job name)"),
    "html": (b"<html><body>MKT</body></html>", [], "'<' is not an amino-acid letter"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_af2_submit_refuses_bad_input_and_writes_nothing(
    local_env: Env, case: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, args, says = CLI_CASES[case]
    fasta = tmp_path_factory.mktemp("cli") / "input.fasta"
    fasta.write_bytes(data)
    before = written(local_env)
    with serve(create_asgi_app(local_env.world)) as url:
        monkeypatch.setenv("AF2_API_URL", url)
        monkeypatch.setenv("AF2_API_KEY", local_env.world.ann)
        code = main(["submit", str(fasta), *args])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and says in err, err
    assert_nothing_written(local_env, before)


def test_the_case_count_meets_the_issue() -> None:
    """Issue 7 asks for at least 50 malformed cases; docs/reliability.md quotes these counts."""
    # + the 3 base64 bodies behind API Gateway and the 4,400-digit integer
    refused = len(REFUSED) + len(RAW_CASES) + len(CLI_CASES) + 3 + 1
    assert refused >= 50
    groups = {c.group for c in REFUSED + RAW_CASES}
    assert {"binary", "over the limit", "unicode", "empty", "wrong type", "unknown field", "huge number",
            "path traversal", "shell", "sql", "html"} <= groups
