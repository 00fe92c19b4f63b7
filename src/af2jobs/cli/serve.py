"""`af2 serve`: the job API on this machine, with a worker that runs the jobs (MSA on CPU workers, predictions on
GPU slots). State lives under AF2_DATA_DIR; on start, jobs a previous server left unfinished are recovered."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

import pydantic

from af2jobs import wiring
from af2jobs.errors import ConfigurationError, ValidationError, pydantic_message
from af2jobs.settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the job API on this machine and run its jobs")
    p.add_argument("--host", help="address to listen on (default: AF2_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: AF2_PORT or 8080; 0 picks a free one)")
    p.add_argument("--cpu-workers", type=int,
                   help="threads running MSA stages (default: AF2_CPU_WORKERS or 1); 0 pauses: new jobs stay QUEUED")
    p.add_argument("--gpus", help="comma-separated GPU numbers, one prediction slot each (default: AF2_GPUS; "
                                  "none: one slot on whatever JAX sees)")
    # Development and tests: the 1-block model of `af2 predict --profile tiny`. MSA caps: AF2_MAX_MSA_CLUSTERS etc.
    p.add_argument("--profile", choices=["full", "tiny"], default="full", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Settings:
    given = {"host": args.host, "port": args.port, "cpu_workers": args.cpu_workers, "gpus": args.gpus}
    try:
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        raise ValidationError(f"--{name.replace('_', '-')}: {pydantic_message(err)}", field=name or None) from None


def _bind(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a port in use fails at once and port 0 yields the real port to print.

    The protocol is named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose proto is
    IPPROTO_TCP, and an accepted connection takes its listener's. With proto 0, a response's head and body (two
    writes) waited for the client's delayed ACK: 40 ms on every request."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror} (use --port or AF2_PORT)") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(services: wiring.Services, url: str, recovered: dict[str, str]) -> None:
    s = services.settings
    print(f"af2 serve: {url}  (OpenAPI document: {url}/openapi.json)")
    if services.worker is not None:
        slots = ", ".join(f"GPU {g}" if g is not None else "default device" for g in services.worker.slots)
        paused = "  [paused: jobs stay QUEUED]" if s.cpu_workers == 0 else ""
        print(f"  data {s.data_dir}; {s.cpu_workers} CPU worker(s); prediction slots: {slots}{paused}")
    else:
        print(f"  mode {s.mode}: jobs run on AWS; this server only answers the API")
    if recovered:
        print(f"  recovered {len(recovered)} unfinished job(s) from the last run:")
        for job_id, action in recovered.items():
            print(f"    {job_id}: {action}")
    if not services.keys.list():
        print("  No API keys yet. Create one (same AF2_DATA_DIR):  af2 keys create --owner NAME [--admin]")
    if services.worker is not None:
        for line in setup_warnings(s):
            print(f"  WARNING: {line}")
    sys.stdout.flush()


def setup_warnings(settings) -> list[str]:
    """What a local server should say at start-up about what its jobs will lack."""
    from af2jobs.pipeline.databases import discover

    found = discover(settings.database_root)
    lines = []
    if not found:
        lines.append(f"no database under {settings.database_root}: every job will fail in its MSA stage (run "
                     "'af2 db fetch-demo', or set AF2_DB_ROOT)")
    if not any(settings.params_root.glob("**/params_model_*.npz")):
        lines.append(f"no official parameters under {settings.params_root}: predictions run on UNTRAINED "
                     "parameters" + ("" if settings.allow_untrained else ", which AF2_ALLOW_UNTRAINED=false refuses"))
    return lines


class _Terminated(Exception):
    """SIGTERM arrived (and uvicorn, if it was running, has shut down cleanly)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def cancel_verb_protocol():
    """uvicorn's httptools protocol, reading the original platform's CANCEL method too.

    httptools (llhttp) knows a fixed list of methods and answers any other with a plain-text 400 before the app
    sees it. A request that starts a data chunk with 'CANCEL ' while no request is under way on the connection (a
    client's request line arrives whole, at the start of what it sends) is given to the parser as PURGE, a method
    llhttp knows and the API has no route for, and reaches the app as CANCEL. Not read so (llhttp's 400, as
    before): a CANCEL pipelined behind another request in one segment, or a request line split across segments;
    curl, requests and http.client send neither."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class CancelVerbProtocol(HttpToolsProtocol):
        verb, stand_in = b"CANCEL ", b"PURGE "

        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            self._in_request = False
            self._renamed = False
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if not self._in_request and data.startswith(self.verb):
                data = self.stand_in + data[len(self.verb):]
                self._renamed = True
            super().data_received(data)

        def on_message_begin(self) -> None:
            self._in_request = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            renamed, self._renamed = self._renamed, False
            super().on_headers_complete()
            if renamed:  # the request's task is created, not yet run: it reads the scope as set here
                self.scope["method"] = self.verb.strip().decode()

        def on_message_complete(self) -> None:
            self._in_request = False
            super().on_message_complete()

    return CancelVerbProtocol


def server_config(app, **options):
    """How `af2 serve` runs uvicorn (tests add host, port and log level through `options`): no access log (a line
    per request was a seventh of the server's CPU time under load; the API still logs submissions, uploads and
    unhandled errors itself), and httptools' HTTP parser, which takes about 0.3 ms less CPU per request than h11's
    (docs/reliability.md, section 2), which reads the original platform's CANCEL method too (cancel_verb_protocol)."""
    try:
        import httptools  # noqa: F401 - named below; imported here so that a missing one says how to install it
        import uvicorn
    except ImportError:
        raise ConfigurationError("af2 serve needs uvicorn and httptools: pip install 'af2jobs[local]'") from None
    return uvicorn.Config(app, **{"log_level": "info", "access_log": False, "http": cancel_verb_protocol(),
                                  **options})


def _serve(app, sock: socket.socket) -> None:
    """Serve until SIGINT (KeyboardInterrupt, as always) or SIGTERM (a normal return)."""
    config = server_config(app)
    import uvicorn  # there: server_config found it
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it found. Python's
    # default handler would end the process on the spot, before the worker is stopped; ours unwinds instead.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except _Terminated:
        log.info("SIGTERM: stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"profile": "tiny"} if args.profile == "tiny" else {}
    with _bind(settings.host, settings.port) as sock:
        # The port bound (port 0 picks one): the links a job's mail carries point at this server.
        settings = settings.model_copy(update={"port": sock.getsockname()[1]})
        services = wiring.build(settings, run_overrides=overrides)
        try:
            from af2jobs.api.app import create_asgi_app

            app = create_asgi_app(services)
            recovered: dict[str, str] = {}
            if services.worker is not None:
                services.worker.start()  # takes the data directory's lock before recover() touches any job
                recovered = services.worker.recover()
            _announce(services, _url(settings.host, settings.port), recovered)
            _serve(app, sock)
        finally:
            services.close()
    return 0
