"""What the API tests share: recording fakes for the orchestrator and notifier, in-process services on the local
adapters (or on the AWS adapters under moto), and two ways to send a request to the one Router:

- `AsgiClient`: the local app (create_asgi_app), driven in-process through the ASGI interface;
- `LambdaClient`: the Lambda resolver (create_lambda_resolver), fed API Gateway REST proxy events built from the
  recorded event in tests/data/events/.

Both answer `Reply(status, headers, body)`, so one test can run against either.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest
import uvicorn

from af2jobs.adapters.aws import DynamoApiKeyStore, DynamoJobRepository, S3ArtifactStore
from af2jobs.adapters.local.files import DirectoryArtifactStore
from af2jobs.adapters.local.sqlite import SqliteApiKeyStore, SqliteJobRepository
from af2jobs.api.app import create_asgi_app, create_lambda_resolver
from af2jobs.links import LinkSigner
from af2jobs.models import Job, JobState
from af2jobs.ports import ApiKeyStore, ArtifactStore, JobRepository
from af2jobs.service import JobService
from af2jobs.settings import Settings
from tests.functional import moto_support
from tests.fakes import RecordingNotifier, RecordingOrchestrator

EVENTS = Path(__file__).resolve().parents[1] / "data" / "events"
SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
LINK_SECRET = b"a test's link secret, 32 bytes or more"
# Small enough to exceed cheaply in tests; the smallest value Settings allows.
MAX_BODY = 4096


@dataclass(frozen=True)
class Keys:
    """A key store and keys in it. Made once per module: each key costs a deliberately slow hash."""

    store: ApiKeyStore
    ann: str
    bob: str
    admin: str
    revoked: str  # was ann's

    @classmethod
    def make(cls, store: ApiKeyStore) -> Keys:
        revoked = store.create("ann")
        store.revoke(revoked.split("_")[1])
        return cls(store, store.create("ann"), store.create("bob"), store.create("root", admin=True), revoked)


@dataclass
class World:
    """The services an app is created from (the fields create_* read), plus the fakes and the test's keys."""

    service: JobService
    repo: JobRepository
    store: ArtifactStore
    keys: ApiKeyStore
    orchestrator: RecordingOrchestrator
    notifier: RecordingNotifier
    key: Keys
    links: LinkSigner | None = None  # signs the key-less links of a job's mail

    @property
    def ann(self) -> str:
        return self.key.ann

    @property
    def bob(self) -> str:
        return self.key.bob

    @property
    def admin(self) -> str:
        return self.key.admin

    def move(self, job_id: str, *states: JobState) -> Job:
        """Move a job along `states` as the pipeline would."""
        job = self.repo.get(job_id)
        for state in states:
            job = self.repo.transition(job_id, {job.state}, state)
        return job


def make_world(repo: JobRepository, store: ArtifactStore, keys: Keys, data_dir: Path) -> World:
    orchestrator, notifier = RecordingOrchestrator(), RecordingNotifier()
    settings = Settings(data_dir=data_dir, max_request_bytes=MAX_BODY)
    service = JobService(repo, store, orchestrator, notifier, settings)
    links = LinkSigner(LINK_SECRET, "https://api.example.org/v1")
    return World(service, repo, store, keys.store, orchestrator, notifier, keys, links)


def local_keys(directory: Path) -> Keys:
    return Keys.make(SqliteApiKeyStore(directory / "keys.sqlite3"))


def local_world(tmp_path: Path, keys: Keys) -> World:
    repo = SqliteJobRepository(tmp_path / "jobs.sqlite3")
    return make_world(repo, DirectoryArtifactStore(tmp_path / "artifacts"), keys, tmp_path)


@dataclass(frozen=True)
class AwsParts:
    """One moto account for a module: clients and the key table are made once, each test gets its own table
    and bucket (made through the adapters' own definitions)."""

    dynamodb: Any
    s3: Any
    keys: Keys


@contextmanager
def moto_parts() -> Iterator[AwsParts]:
    with pytest.MonkeyPatch.context() as mp, moto_support.moto_aws(mp):
        dynamodb, s3 = moto_support.client("dynamodb"), moto_support.client("s3")
        dynamodb.create_table(**DynamoApiKeyStore.table_definition("af2-keys"))
        yield AwsParts(dynamodb, s3, Keys.make(DynamoApiKeyStore("af2-keys", client=dynamodb)))


def aws_world(parts: AwsParts, tmp_path: Path) -> World:
    name = uuid.uuid4().hex
    parts.dynamodb.create_table(**DynamoJobRepository.table_definition(f"jobs-{name}"))
    parts.s3.create_bucket(Bucket=f"artifacts-{name}")
    repo = DynamoJobRepository(f"jobs-{name}", client=parts.dynamodb)
    return make_world(repo, S3ArtifactStore(f"artifacts-{name}", client=parts.s3), parts.keys, tmp_path)


def close_world(world: World) -> None:
    close = getattr(world.repo, "close", None)
    if close is not None:
        close()


# ---------------------------------------------------------------------------------------------------------------
# Clients


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Client(Protocol):
    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply: ...


def _encode(json_body: Any, body: bytes | None, headers: dict[str, str] | None) -> tuple[bytes, dict[str, str]]:
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    return body or b"", headers


@dataclass
class AsgiClient:
    """The local ASGI app, called in-process: each call is one ASGI http request."""

    app: Any
    chunk: int | None = None  # send the body in chunks of this size, without Content-Length

    def call(self, method, path, *, json_body=None, body=None, headers=None, query=None) -> Reply:
        data, headers = _encode(json_body, body, headers)
        if self.chunk is None:
            headers.setdefault("Content-Length", str(len(data)))
        return asyncio.run(self._call(method, path, data, headers, urlencode(query or {})))

    async def _call(self, method: str, path: str, data: bytes, headers: dict[str, str], query: str) -> Reply:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }
        size = self.chunk or max(len(data), 1)
        messages = [
            {"type": "http.request", "body": data[i : i + size], "more_body": i + size < len(data)}
            for i in range(0, max(len(data), 1), size)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return Reply(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body)


class LambdaContext:
    function_name = "af2jobs-api"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:af2jobs-api"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def rest_event(
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    authorizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A REST proxy event for this request, made from the recorded one: API Gateway's shape, stage and ids."""
    event = copy.deepcopy(load_event("rest_get_job.json"))
    event.update(
        httpMethod=method,
        path=path,
        headers=dict(headers or {}) or None,
        multiValueHeaders={k: [v] for k, v in (headers or {}).items()} or None,
        queryStringParameters=dict(query) if query else None,
        multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        body=body.decode() if body else None,
        isBase64Encoded=False,
        pathParameters=None,
    )
    context = event["requestContext"]
    context.update(httpMethod=method, path=f"/{context['stage']}{path}")
    if authorizer is None:
        context.pop("authorizer", None)  # invoked without the TOKEN authorizer: the API checks the key itself
    else:
        context["authorizer"] = authorizer
    return event


@dataclass
class LambdaClient:
    """The Lambda resolver, given API Gateway REST proxy events."""

    resolver: Any
    authorizer: dict[str, Any] | None = None

    def call(self, method, path, *, json_body=None, body=None, headers=None, query=None) -> Reply:
        data, headers = _encode(json_body, body, headers)
        event = rest_event(method, path, body=data, headers=headers, query=query, authorizer=self.authorizer)
        return self.invoke(event)

    def invoke(self, event: dict[str, Any]) -> Reply:
        # Round-trip through JSON as Lambda does: the response must be plain JSON.
        result = json.loads(json.dumps(self.resolver.resolve(event, LambdaContext())))
        body = result.get("body") or ""
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
        headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        for k, values in (result.get("multiValueHeaders") or {}).items():
            headers[k.lower()] = ", ".join(values)
        return Reply(result["statusCode"], headers, raw)


def asgi_client(world: World, **kwargs: Any) -> AsgiClient:
    return AsgiClient(create_asgi_app(world), **kwargs)


def lambda_client(world: World, **kwargs: Any) -> LambdaClient:
    return LambdaClient(create_lambda_resolver(world), **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# A real local server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn as `af2 serve` runs it, on a free loopback port in a thread; yields its base URL."""
    from af2jobs.cli.serve import server_config

    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------------------------------------------------
# The API in its two forms, as test fixtures (a test module imports the fixtures it uses)


@dataclass
class Env:
    kind: str  # "local" | "lambda"
    world: World
    client: Client
    root: Path | None = None  # the test's directory: the local app's SQLite file and artifacts live under it

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> Reply:
        headers = dict(kw.pop("headers", None) or {})
        if key is not None:
            headers["Authorization"] = key
        return self.client.call(method, path, headers=headers, **kw)

    def submit(self, key: str, **fields: Any) -> dict[str, Any]:
        reply = self.call("POST", "/jobs", key, json_body={"fasta": "job1", "sequence": SEQ, **fields})
        assert reply.status == 201, reply.text
        return reply.json()


def make_env(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    if kind == "local":
        world = local_world(tmp_path, request.getfixturevalue("keys"))
        yield Env("local", world, asgi_client(world), tmp_path)
        close_world(world)
    else:
        world = aws_world(request.getfixturevalue("aws"), tmp_path)
        yield Env("lambda", world, lambda_client(world), tmp_path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return local_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsParts]:
    with moto_parts() as parts:
        yield parts


@pytest.fixture(params=["local", "lambda"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(request.param, request, tmp_path)
