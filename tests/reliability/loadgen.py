"""Load on a real `af2 serve --cpu-workers 0` (real SQLite and files; jobs stay QUEUED): concurrent clients submit,
list, cancel and delete over HTTP, then read, then the job table is checked against every answer.

    python tests/reliability/loadgen.py --submissions 1000 --clients 20 --reads 2000

Each client is a thread with its own keep-alive connection. Clients come in pairs that share an owner and a list of
Idempotency-Keys, so every keyed submission is sent twice, by two clients at about the same time. Between
submissions a client lists its owner's jobs (every 4th operation), and cancels then deletes one of its own jobs
(every 8th). Then the read phase: the same clients send `--reads` GET /jobs/{id} in all (each of a job its owner
created, in turn), then `--reads` GET /jobs?limit=50 (`--page`; the owner's first page), each client a fixed share;
every answer is checked (200, the job asked for, the owner's jobs only). At the end the checker pages through
GET /jobs with an admin key and reads the SQLite file itself:

    lost        jobs answered 201 (and not deleted) that the listing or the database lacks
    duplicated  jobs beyond one per Idempotency-Key, or ids listed twice
    5xx         answers with a status of 500 or more
    undocumented answers whose status the OpenAPI document does not give for that operation

Latency is per request, measured by the client (connect included on the first request of a connection); each
phase's requests/s is its requests over its wall time, from the first request to the last answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import queue
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
BODY = {"fasta": "ubq", "sequence": UBIQUITIN, "model_names": ["model_1"], "strategy": "best"}
# The statuses the OpenAPI document gives for each operation (src/af2jobs/api/routes.py, _doc).
DOCUMENTED = {
    "submit": {201, 400, 401, 404, 409, 413, 415, 422},
    "list": {200, 401, 422},
    "get": {200, 401, 404, 422},
    "cancel": {200, 401, 404, 409, 422},
    "delete": {200, 401, 404, 409, 422},
}
LIST_EVERY = 4
CANCEL_EVERY = 8
KEYED_EVERY = 10  # every 10th submission of a pair carries an Idempotency-Key, sent by both clients of the pair
READ_PAGE = 50  # the read phase's lists: GET /jobs's default page


@dataclass
class Answer:
    op: str
    status: int
    seconds: float
    body: Any


@dataclass
class Results:
    answers: list[Answer] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # job id -> owner, from 201 answers
    keyed: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))  # (owner, key) -> ids
    cancelled: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # transport errors and wrong answers
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # "server" and "driver": CPU seconds over the phase
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)


class Server:
    """`af2 serve --port 0 --cpu-workers 0` on a data directory, in a subprocess."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AF2_")}
        env.update({"AF2_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "af2jobs.cli.main", "serve", "--port", "0", "--cpu-workers", "0"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise RuntimeError(f"af2 serve did not start; see {log}") from None
            if line.startswith("af2 serve: "):
                self.url = line.split()[2]
                break
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("GET", "/openapi.json")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("af2 serve does not answer") from None
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far; NaN where /proc cannot tell."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._log.close()


def create_keys(data_dir: Path, owners: list[str]) -> tuple[dict[str, str], str]:
    """One key per owner and an admin key, written to the server's key store (as `af2 keys create` does)."""
    from af2jobs import wiring
    from af2jobs.settings import Settings

    store = wiring.key_store(Settings(data_dir=data_dir))
    try:
        keys = {owner: store.create(owner) for owner in owners}
        return keys, store.create("load-admin", admin=True)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


class Client:
    def __init__(self, server: Server, key: str, results: Results) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        self.key = key
        self.results = results

    def call(self, op: str, method: str, path: str, body: dict | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Authorization": self.key, "Content-Type": "application/json", **(headers or {})}
        t0 = time.perf_counter()
        self.conn.request(method, path, body=data, headers=sent)
        response = self.conn.getresponse()
        raw = response.read()
        seconds = time.perf_counter() - t0
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw[:200]
        # Only the caller sees the body: thousands of parsed pages kept to the end made the driver's garbage
        # collections, not the server, the slowest part of a run.
        self.results.add(Answer(op, response.status, seconds, None))
        return Answer(op, response.status, seconds, payload)

    def close(self) -> None:
        self.conn.close()


def _client_loop(server: Server, key: str, owner: str, pair: int, submissions: int, results: Results,
                 start: threading.Barrier) -> None:
    client = Client(server, key, results)
    mine: list[str] = []
    op = 0
    try:
        start.wait()
        for n in range(submissions):
            headers = {"Idempotency-Key": f"pair{pair}-{n}"} if n % KEYED_EVERY == 0 else {}
            answer = client.call("submit", "POST", "/jobs", BODY, headers)
            if answer.status == 201:
                job_id = answer.body["id"]
                with results.lock:
                    results.created[job_id] = owner
                    if headers:
                        results.keyed[(owner, headers["Idempotency-Key"])].add(job_id)
                if not headers:  # a keyed job may be the pair's other client's: only cancel unkeyed ones
                    mine.append(job_id)
            else:
                results.errors.append(f"submit answered {answer.status}: {answer.body}")
            op += 1
            if op % LIST_EVERY == 0:
                listed = client.call("list", "GET", "/jobs?limit=50")
                if listed.status != 200:
                    results.errors.append(f"list answered {listed.status}: {listed.body}")
            if op % CANCEL_EVERY == 0 and mine:
                victim = mine.pop(0)
                cancelled = client.call("cancel", "POST", f"/jobs/{victim}/cancel")
                if cancelled.status == 200 and cancelled.body["state"] == "CANCELLED":
                    with results.lock:
                        results.cancelled.add(victim)
                    deleted = client.call("delete", "DELETE", f"/jobs/{victim}")
                    if deleted.status == 200 and deleted.body["deleted"] == [victim]:
                        with results.lock:
                            results.deleted.add(victim)
                    else:
                        results.errors.append(f"delete answered {deleted.status}: {deleted.body}")
                else:
                    results.errors.append(f"cancel answered {cancelled.status}: {cancelled.body}")
    except Exception as exc:  # a refused or dropped connection is a finding, not a crash of the driver
        results.errors.append(f"client {owner}/{pair}: {type(exc).__name__}: {exc}")
    finally:
        client.close()


def drive(server: Server, keys: dict[str, str], submissions: int, clients: int, results: Results) -> None:
    """Run `clients` threads that together send `submissions` submissions (plus lists, cancels, deletes)."""
    owners = list(keys)
    per_client = _shares(submissions, clients)
    targets = []
    for i in range(clients):
        pair = i // 2
        owner = owners[pair % len(owners)]
        targets.append((_client_loop, (server, keys[owner], owner, pair, per_client[i], results)))
    _together(server, targets, results)


def _shares(total: int, clients: int) -> list[int]:
    return [total // clients + (1 if i < total % clients else 0) for i in range(clients)]


def _together(server: Server, targets: list[tuple[Any, tuple]], results: Results) -> None:
    """Run each (function, args) in its own thread, all released at once (the function's last argument is the
    barrier to wait on); sets the results' wall time, from the release to the last thread's end, and the CPU time
    the server and this driver used meanwhile (both run on the same machine)."""
    start = threading.Barrier(len(targets) + 1)
    threads = [threading.Thread(target=target, name=f"client-{i}", args=(*args, start))
               for i, (target, args) in enumerate(targets)]
    for thread in threads:
        thread.start()
    start.wait()
    t0, server0, driver0 = time.perf_counter(), server.cpu_seconds(), time.process_time()
    for thread in threads:
        thread.join()
    results.wall_s = time.perf_counter() - t0
    results.cpu_s = {"server": server.cpu_seconds() - server0, "driver": time.process_time() - driver0}


def _read_loop(server: Server, key: str, owner: str, op: str, jobs: list[str], count: int, page: int,
               results: Results, start: threading.Barrier) -> None:
    client = Client(server, key, results)
    try:
        start.wait()
        for n in range(count):
            if op == "get":
                job_id = jobs[n % len(jobs)]
                answer = client.call("get", "GET", f"/jobs/{job_id}")
                if answer.status != 200 or answer.body["id"] != job_id:
                    results.errors.append(f"get {job_id} answered {answer.status}: {str(answer.body)[:200]}")
            else:
                answer = client.call("list", "GET", f"/jobs?limit={page}")
                if answer.status != 200 or any(j["owner"] != owner for j in answer.body["jobs"]):
                    results.errors.append(f"list answered {answer.status}: {str(answer.body)[:200]}")
    except Exception as exc:
        results.errors.append(f"client {owner} ({op}): {type(exc).__name__}: {exc}")
    finally:
        client.close()


def drive_reads(server: Server, keys: dict[str, str], reads: int, clients: int, mixed: Results,
                page: int = READ_PAGE) -> dict[str, Results]:
    """The read phase, after `drive`: `reads` GET /jobs/{id} from `clients` threads (of jobs their owner has),
    then `reads` GET /jobs?limit=`page`; one Results per operation."""
    owners = list(keys)
    live: dict[str, list[str]] = defaultdict(list)
    for job_id, owner in mixed.created.items():
        if job_id not in mixed.deleted:
            live[owner].append(job_id)
    phases = {}
    for op in ("get", "list"):
        results = Results()
        targets = []
        for i, count in enumerate(_shares(reads, clients)):
            owner = owners[(i // 2) % len(owners)]
            jobs = live[owner][i::clients] or live[owner]  # spread the clients over the owner's jobs
            targets.append((_read_loop, (server, keys[owner], owner, op, jobs, count, page, results)))
        _together(server, targets, results)
        phases[op] = results
    return phases


def listing(server: Server, admin_key: str) -> list[dict[str, Any]]:
    """Every job, through the API (an admin's listing), page by page."""
    client = Client(server, admin_key, Results())
    jobs: list[dict[str, Any]] = []
    token = None
    try:
        while True:
            path = "/jobs?limit=1000" + (f"&next_token={token}" if token else "")
            answer = client.call("list", "GET", path)
            assert answer.status == 200, (answer.status, answer.body)
            jobs += answer.body["jobs"]
            token = answer.body.get("next_token")
            if not token:
                return jobs
    finally:
        client.close()


def database_rows(data_dir: Path) -> list[tuple[str, str, str, str | None]]:
    """(id, owner, state, idempotency_key) of every job in the server's SQLite file."""
    with sqlite3.connect(data_dir / "jobs.sqlite3") as conn:
        return conn.execute("SELECT id, owner, state, idempotency_key FROM jobs").fetchall()


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def check(results: Results, listed: list[dict[str, Any]], rows: list[tuple],
          reads: dict[str, Results] | None = None) -> dict[str, Any]:
    answers = results.answers + [a for phase in (reads or {}).values() for a in phase.answers]
    expected = set(results.created) - results.deleted
    listed_ids = [j["id"] for j in listed]
    db_ids = [r[0] for r in rows]
    keyed_rows = Counter((r[1], r[3]) for r in rows if r[3] is not None)
    return {
        "submitted_201": sum(a.op == "submit" and a.status == 201 for a in results.answers),
        "jobs_created": len(results.created),
        "deleted": len(results.deleted),
        "expected_jobs": len(expected),
        "listed_jobs": len(listed_ids),
        "database_jobs": len(db_ids),
        "lost_from_listing": len(expected - set(listed_ids)),
        "lost_from_database": len(expected - set(db_ids)),
        "unexpected_jobs": len(set(db_ids) - expected),
        "duplicated_ids": len(listed_ids) - len(set(listed_ids)),
        "duplicated_by_key": sum(len(ids) - 1 for ids in results.keyed.values())
        + sum(n - 1 for n in keyed_rows.values()),
        "idempotency_keys": len(results.keyed),
        "status_5xx": sum(a.status >= 500 for a in answers),
        "undocumented": sum(a.status not in DOCUMENTED[a.op] for a in answers),
        "cancelled_not_cancelled": sum(1 for j in listed if j["id"] in results.cancelled and j["state"] != "CANCELLED"),
        "client_errors": len(results.errors) + sum(len(phase.errors) for phase in (reads or {}).values()),
    }


def latency_table(results: Results, ops: tuple[str, ...] = ("submit", "list", "cancel", "delete")
                  ) -> dict[str, dict[str, float]]:
    by_op: dict[str, list[float]] = defaultdict(list)
    for answer in results.answers:
        by_op[answer.op].append(answer.seconds * 1000)
    table = {}
    for op in ops:
        ms = by_op.get(op)
        if ms:
            table[op] = {"n": len(ms), "p50_ms": statistics.median(ms), "p99_ms": percentile(ms, 99),
                         "max_ms": max(ms)}
    return table


def read_table(reads: dict[str, Results]) -> dict[str, dict[str, float]]:
    """Per read operation: requests/s over its phase, the latencies, and the CPU time per request of the server
    and of the driver."""
    table = {}
    for op, results in reads.items():
        row = latency_table(results, (op,)).get(op)
        if row:
            table[op] = {**row, "wall_s": results.wall_s, "requests_per_s": row["n"] / results.wall_s,
                         **{f"{who}_cpu_ms": 1000 * cpu / row["n"] for who, cpu in results.cpu_s.items()}}
    return table


def run(submissions: int, clients: int, work: Path, reads: int = 0, page: int = READ_PAGE) -> dict[str, Any]:
    """Start a server on a fresh data directory under `work`, drive it (then `reads` gets and `reads` lists, if
    any), check it; the figures as a dict."""
    data_dir = work / "data"
    owners = [f"owner{i}" for i in range(max(1, clients // 4))]
    keys, admin_key = create_keys(data_dir, owners)
    server = Server(data_dir, work / "serve.log")
    results = Results()
    phases: dict[str, Results] = {}
    try:
        drive(server, keys, submissions, clients, results)
        if reads:
            phases = drive_reads(server, keys, reads, clients, results, page)
        listed = listing(server, admin_key)
    finally:
        exit_code = server.close()
    rows = database_rows(data_dir)
    counts = check(results, listed, rows, phases)
    requests = len(results.answers)
    errors = results.errors + [e for phase in phases.values() for e in phase.errors]
    return {
        "submissions": submissions, "clients": clients, "page": page, "wall_s": results.wall_s, "requests": requests,
        "submissions_per_s": counts["submitted_201"] / results.wall_s, "requests_per_s": requests / results.wall_s,
        "cpu_ms_per_request": {who: 1000 * cpu / requests for who, cpu in results.cpu_s.items()},
        "latency": latency_table(results), "reads": read_table(phases), "counts": counts, "errors": errors[:10],
        "server_exit_code": exit_code,
    }


def report(figures: dict[str, Any]) -> str:
    c = figures["counts"]
    lines = [
        f"{figures['submissions']} submissions from {figures['clients']} clients in {figures['wall_s']:.1f} s: "
        f"{figures['submissions_per_s']:.1f} submissions/s, {figures['requests']} requests "
        f"({figures['requests_per_s']:.1f}/s); CPU per request: server "
        f"{figures['cpu_ms_per_request']['server']:.2f} ms, driver {figures['cpu_ms_per_request']['driver']:.2f} ms",
        f"{'operation':<10}{'n':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
    ]
    for op, row in figures["latency"].items():
        lines.append(f"{op:<10}{row['n']:>7}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}{row['max_ms']:>10.1f}")
    if figures["reads"]:
        lines.append(f"read phase, {figures['clients']} clients: GET /jobs/{{id}} (get), then GET /jobs?limit="
                     f"{figures['page']} (list)")
        lines.append(f"{'operation':<10}{'n':>7}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
                     f"{'server CPU ms':>15}{'driver CPU ms':>15}")
        for op, row in figures["reads"].items():
            lines.append(f"{op:<10}{row['n']:>7}{row['requests_per_s']:>10.1f}{row['p50_ms']:>10.1f}"
                         f"{row['p99_ms']:>10.1f}{row['max_ms']:>10.1f}{row['server_cpu_ms']:>15.2f}"
                         f"{row['driver_cpu_ms']:>15.2f}")
    lines.append(
        f"jobs created {c['jobs_created']}, deleted {c['deleted']}, listed {c['listed_jobs']}, in the database "
        f"{c['database_jobs']}; lost {c['lost_from_listing'] + c['lost_from_database']}, duplicated "
        f"{c['duplicated_ids'] + c['duplicated_by_key']} ({c['idempotency_keys']} Idempotency-Keys, each sent "
        f"twice), 5xx {c['status_5xx']}, undocumented statuses {c['undocumented']}, client errors "
        f"{c['client_errors']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--reads", type=int, default=2000,
                        help="GET /jobs/{id} requests, and as many GET /jobs, in the read phase (0: none)")
    parser.add_argument("--page", type=int, default=READ_PAGE, help="the read phase's GET /jobs?limit=")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="af2-load-") as work:
        figures = run(args.submissions, args.clients, Path(work), args.reads, args.page)
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    c = figures["counts"]
    bad = (c["lost_from_listing"] + c["lost_from_database"] + c["duplicated_ids"] + c["duplicated_by_key"]
           + c["status_5xx"] + c["undocumented"] + c["client_errors"] + c["unexpected_jobs"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
