"""The local server serves several requests at once: requests overlap inside the handlers (each in a thread of
LocalApi's pool, the whole middleware chain in that one thread), each keeps its own event and context, and more
requests than threads all get their answer. Under uvicorn on a loopback port, with the local adapters."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import depends

from af2jobs.api.app import RESOLVER_THREADS, PreparedJsonResponses, create_asgi_app, create_lambda_resolver
from tests.functional.api_support import (  # noqa: F401 - keys is a fixture
    SEQ,
    close_world,
    keys,
    local_world,
    serve,
)

# Only for a server that never lets the requests meet: then the barrier breaks and the requests answer 500.
DEADLOCK_S = 30


class Overlapping:
    """A JobService whose get() returns only once `barrier`'s number of get() calls are inside it at once."""

    def __init__(self, service: Any, barrier: threading.Barrier) -> None:
        self._service = service
        self._barrier = barrier

    def get(self, principal: Any, job_id: str) -> Any:
        self._barrier.wait()
        return self._service.get(principal, job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)


def _request(url: str, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=DEADLOCK_S * 2)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Authorization": key, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _submit(url: str, key: str, name: str) -> str:
    status, body = _request(url, "POST", "/jobs", key, {"fasta": name, "sequence": SEQ})
    assert status == 201, body
    return body["id"]


def test_requests_overlap_inside_the_handlers(tmp_path, keys):
    world = local_world(tmp_path, keys)
    at_once = RESOLVER_THREADS
    barrier = threading.Barrier(at_once, timeout=DEADLOCK_S)
    app = create_asgi_app(dataclasses.replace(world, service=Overlapping(world.service, barrier)))
    try:
        with serve(app) as url:
            ids = [_submit(url, keys.ann, f"job{i}") for i in range(at_once)]
            with ThreadPoolExecutor(at_once) as pool:
                answers = list(pool.map(lambda job_id: _request(url, "GET", f"/jobs/{job_id}", keys.ann), ids))
    finally:
        close_world(world)
    # One request at a time through the chain (the server before): the first waits at the barrier alone, it breaks
    # after DEADLOCK_S, and every request answers 500.
    assert [status for status, _ in answers] == [200] * at_once, answers
    # Each request saw its own event: every answer is the job its path named.
    assert [body["id"] for _, body in answers] == ids
    assert not barrier.broken


def test_more_requests_than_threads_all_answer_with_their_own_data(tmp_path, keys):
    """Three times as many concurrent clients as resolver threads, each mixing submits, gets, lists and a bad
    request: every answer is right for its own request (no request reads another's event or context)."""
    world = local_world(tmp_path, keys)
    clients = 3 * RESOLVER_THREADS

    def client(i: int) -> list[str]:
        key = keys.ann if i % 2 else keys.bob
        owner = "ann" if i % 2 else "bob"
        problems = []
        for n in range(5):
            job_id = _submit(url, key, f"c{i}-{n}")
            status, job = _request(url, "GET", f"/jobs/{job_id}", key)
            if status != 200 or job["id"] != job_id or job["request"]["fasta"] != f"c{i}-{n}":
                problems.append(f"get {job_id}: {status} {job}")
            status, page = _request(url, "GET", "/jobs?limit=5", key)
            if status != 200 or any(j["owner"] != owner for j in page["jobs"]):
                problems.append(f"list: {status} {page}")
            status, bad = _request(url, "GET", "/jobs?limit=0", key)
            if status != 422:
                problems.append(f"limit=0: {status} {bad}")
        return problems

    try:
        with serve(create_asgi_app(world)) as url, ThreadPoolExecutor(clients) as pool:
            problems = [p for found in pool.map(client, range(clients)) for p in found]
    finally:
        close_world(world)
    assert problems == []


def test_the_powertools_internals_the_local_server_relies_on_are_there(tmp_path, keys):
    """LocalApi resolves through HttpResolverLocal's per-request state (a ContextVar) and builds every route's
    middleware chain up front, both apps validate responses with PreparedJsonResponses (GET /jobs's page is sent
    as the text it made), and they cache Powertools' dependency trees and dependencies' type hints: an upgrade
    that renames any of these fails here first."""
    world = local_world(tmp_path, keys)
    try:
        app = create_asgi_app(world)
        apps = [app, create_lambda_resolver(world)]
    finally:
        close_world(world)
    assert isinstance(app._request_state, contextvars.ContextVar) and app._startup_state.event is None
    routes = app._static_routes + app._dynamic_routes
    assert routes and all(route._middleware_stack_built for route in routes)
    assert all(isinstance(each._response_validation_middleware, PreparedJsonResponses) for each in apps)
    assert hasattr(depends.build_dependency_tree, "cache_info") and hasattr(depends.get_type_hints, "cache_info")


def test_af2_serve_answers_without_waiting_for_delayed_acks():
    """`af2 serve` binds its socket itself; asyncio disables Nagle's algorithm only on connections whose socket
    proto is IPPROTO_TCP, which they take from the listener. With Nagle on, every response (head and body are two
    writes) waited for the client's delayed ACK: 40 ms a request, whatever the load."""
    from af2jobs.cli.serve import _bind

    nodelay: list[int] = []

    async def main() -> None:
        connected = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()
                connected.set()

        with _bind("127.0.0.1", 0) as sock:
            server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
            async with server:
                _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
                await asyncio.wait_for(connected.wait(), DEADLOCK_S)
                writer.close()

    asyncio.run(main())
    assert nodelay and nodelay[0] != 0


def test_af2_serve_parses_http_with_httptools(tmp_path, keys):
    """h11's HTTP parsing and writing, in Python, took about 0.3 ms of each request's CPU time in the server
    (docs/reliability.md, section 2); `af2 serve` runs uvicorn with httptools' parser, and writes no access log."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from af2jobs.cli.serve import server_config

    world = local_world(tmp_path, keys)
    try:
        config = server_config(create_asgi_app(world))
        config.load()
    finally:
        close_world(world)
    # httptools' protocol, reading the original platform's CANCEL method too (tests/functional/test_original_routes.py)
    assert issubclass(config.http_protocol_class, HttpToolsProtocol) and config.access_log is False
