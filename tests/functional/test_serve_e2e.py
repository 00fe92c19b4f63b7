"""`af2 serve` as a real process on a loopback port: a key from `af2 keys create`, a job submitted and fetched over
HTTP, then the server killed with SIGKILL in the middle of another job's MSA and restarted: that job completes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import numpy as np
import pytest

from af2jobs.adapters.local.sqlite import SqliteJobRepository
from tests.conftest import UBIQUITIN

pytestmark = pytest.mark.pipeline

AF2 = [sys.executable, "-m", "af2jobs.cli.main"]
# Job B: several records, each its own MSA, so that its MSA phase can be killed between records' searches.
RECORDS = 4
# Random sequences searched as 'mgnify': no hits, so the MSAs are unchanged, but each search takes a second or so,
# which keeps job B in its MSA phase long enough to be killed there however loaded the machine is.
DECOYS, DECOY_LENGTH = 160_000, 250


class Server:
    """`af2 serve --port 0` (the tiny model) in a subprocess; its stdout is collected line by line."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._err = open(log, "w")
        self.proc = subprocess.Popen([*AF2, "serve", "--port", "0", "--profile", "tiny"], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=self._err)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.expect("af2 serve: ").split()[2]
        self._wait_listening()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))

    def expect(self, text: str, timeout: float = 60) -> str:
        """The first output line containing `text`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            match = next((line for line in self.lines if text in line), None)
            if match is not None:
                return match
            try:
                self.lines.append(self._new.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"server never printed {text!r}; stdout: {self.lines}") from None

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/openapi.json", timeout=5).close()
                return
            except URLError:
                assert time.monotonic() < deadline and self.proc.poll() is None, "the server does not answer"
                time.sleep(0.1)

    def close(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._err.close()


def call(server: Server, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except HTTPError as exc:
        return exc.code, exc.read()


def get_job(server: Server, key: str, job_id: str) -> dict[str, Any]:
    status, body = call(server, key, "GET", f"/jobs/{job_id}")
    assert status == 200, body
    return json.loads(body)


def poll(server: Server, key: str, job_id: str, until, timeout: float = 180, every: float = 0.25) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(server, key, job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} is {job['state']} ({job['progress']}) after {timeout} s"
        time.sleep(every)


def submit(server: Server, key: str, sequence: str) -> str:
    body = {"fasta": "ubq", "sequence": sequence, "model_names": ["model_1"], "strategy": "best",
            "models_to_relax": "none"}
    status, answer = call(server, key, "POST", "/jobs", body)
    assert status == 201, answer
    return json.loads(answer)["id"]


def mid_msa(job: dict[str, Any]) -> bool:
    # The first record's MSA finished, and a later record's search is under way.
    progress = job["progress"] or {}
    return job["state"] == "MSA" and progress.get("stage") == "msa" and progress.get("step", 0) >= 2


def slow_databases(root: Path, demo: Path) -> Path:
    """The demo databases plus a decoy 'mgnify' of random sequences."""
    for name in ("uniref90", "small_bfd", "bfd", "uniref30", "pdb70", "pdb_mmcif"):
        (root / name).mkdir(parents=True)
        for path in (demo / name).iterdir():
            (root / name / path.name).symlink_to(path)
    rng = np.random.default_rng(0)
    residues = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)[rng.integers(0, 20, (DECOYS, DECOY_LENGTH))]
    (root / "mgnify").mkdir()
    with open(root / "mgnify" / "decoys.fasta", "wb") as fh:
        for i, row in enumerate(residues):
            fh.write(b">decoy%d\n%s\n" % (i, row.tobytes()))
    return root


@pytest.fixture
def env(settings_factory, demo_db_root, tmp_path) -> dict[str, str]:
    # A private data dir sharing the session's params cache.
    s = settings_factory(db_root=slow_databases(tmp_path / "db", demo_db_root))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AF2_")}
    return {**clean, "AF2_DATA_DIR": str(s.data_dir), "AF2_DB_ROOT": str(s.database_root),
            "AF2_PARAMS_DIR": str(s.params_root), "AF2_CPUS": "2", "AF2_MAX_MSA_CLUSTERS": "16",
            "AF2_MAX_EXTRA_MSA": "32", "AF2_NUM_RECYCLE": "0",
            # Every record searches for real: cached MSAs would end job B's MSA phase before it could be killed.
            "AF2_MSA_CACHE": "false"}


def downloaded_whole(server: Server, env: dict[str, str], key: str, job_id: str, into: Path) -> None:
    """`af2 download` as typed: every file of the job, binaries too (PNG, pickle), byte for byte as the server
    holds them."""
    result = subprocess.run([*AF2, "download", job_id, str(into)], capture_output=True, text=True, timeout=120,
                            env={**env, "AF2_API_URL": server.url, "AF2_API_KEY": key})
    assert result.returncode == 0, result.stderr
    held = Path(env["AF2_DATA_DIR"]) / "artifacts" / "jobs" / job_id
    served = {name for p in held.rglob("*") if p.is_file()
              if not (name := p.relative_to(held).as_posix()).startswith("work/")}
    got = {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()}
    assert got == served and {"output/ubq/plddt.png", "output/ubq/features.pkl"} <= got
    assert all((into / name).read_bytes() == (held / name).read_bytes() for name in got)


def every_mail_link_opens(env: dict[str, str], job_id: str) -> None:
    """Each link the SUCCEEDED mail carries (its per-file artifacts and its list) opens without a key, giving the
    file's bytes."""
    outbox = Path(env["AF2_DATA_DIR"]) / "outbox"
    [message] = [json.loads(p.read_text()) for p in outbox.glob(f"*-{job_id}-*.json")
                 if json.loads(p.read_text())["event"] == "succeeded"]
    urls = set(message["artifacts"].values()) | {link["url"] for link in message["links"]}
    held = Path(env["AF2_DATA_DIR"]) / "artifacts"
    assert len(urls) > 10
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as response:
            path = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["path"]
            assert response.read() == (held / "jobs" / job_id / path).read_bytes(), url


def test_serve_runs_jobs_over_http_and_recovers_from_sigkill_mid_msa(env, tmp_path):
    server = Server(env, tmp_path / "serve-1.log")
    try:
        server.expect("No API keys yet")
        key = subprocess.run([*AF2, "keys", "create", "--owner", "alice"], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()

        done = poll(server, key, submit(server, key, UBIQUITIN), lambda j: j["finished"])
        assert done["state"] == "SUCCEEDED", done["error"]
        assert any("SUCCEEDED" in line for line in done["log"])
        status, pdb = call(server, key, "GET", done["links"]["ubq/ranked_0.pdb"])
        assert status == 200 and pdb.startswith(b"REMARK") and b"\nATOM " in pdb
        downloaded_whole(server, env, key, done["id"], tmp_path / "download")
        every_mail_link_opens(env, done["id"])

        fasta = "".join(f">r{i}\n{UBIQUITIN}\n" for i in range(1, RECORDS + 1))
        victim = submit(server, key, fasta)
        poll(server, key, victim, mid_msa, timeout=60, every=0.05)
    finally:
        killed = server.close(signal.SIGKILL)
    assert killed == -signal.SIGKILL
    assert SqliteJobRepository(Path(env["AF2_DATA_DIR"]) / "jobs.sqlite3").get(victim).state.value == "MSA"

    server = Server(env, tmp_path / "serve-2.log")
    try:
        server.expect(f"{victim}: MSA again")
        job = poll(server, key, victim, lambda j: j["finished"])
        assert job["state"] == "SUCCEEDED", job["error"]
        assert {f"r{i}/ranked_0.pdb" for i in range(1, RECORDS + 1)} <= set(job["artifacts"])
        status, log = call(server, key, "GET", f"/jobs/{victim}/file?path=log.txt")
        assert status == 200 and b"interrupted by a restart in MSA" in log
        assert log.count(b"MSA finished before a restart; kept") >= 1  # records done before the kill are kept
    finally:
        assert server.close() == 0  # SIGTERM: a clean shutdown
