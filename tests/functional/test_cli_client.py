"""`af2 submit|list|show|watch|cancel|delete|download` against a real local server: uvicorn on a loopback port
serving create_asgi_app over the in-process services (the worker is replaced by a recording fake, so jobs move
only when a test moves them)."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from af2jobs.api.app import create_asgi_app
from af2jobs.cli import client as client_cli
from af2jobs.cli.api_client import ApiClient
from af2jobs.cli.main import main
from af2jobs.models import JobState
from tests.functional.api_support import SEQ, Keys, World, close_world, free_port, local_keys, local_world, serve

S = JobState


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return local_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def world(tmp_path: Path, keys: Keys) -> Iterator[World]:
    world = local_world(tmp_path, keys)
    yield world
    close_world(world)


@pytest.fixture
def url(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serve(create_asgi_app(world)) as base:
        monkeypatch.setenv("AF2_API_URL", base)
        monkeypatch.setenv("AF2_API_KEY", world.ann)
        yield base


@pytest.fixture
def fasta(tmp_path: Path) -> Path:
    path = tmp_path / "my protein (1).fasta"
    path.write_text(f">ubq test\n{SEQ}\n")
    return path


def af2(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def only_job(world: World) -> Any:
    [job] = world.repo.list(None)[0]
    return job


# ==============================================================================================================
# submit


def test_submit_sends_every_option_and_prints_the_id(url: str, world: World, fasta: Path, capsys) -> None:
    code, out, _ = af2(
        capsys, "submit", str(fasta), "--models", "model_1,model_2", "--strategy", "stop-at-score:85",
        "--preset", "reduced", "--que", "mid", "--gpu", "2", "--comment", "from the CLI",
        "--max-template-date", "2021-01-01",
    )
    assert code == 0
    job = only_job(world)
    assert out.strip() == job.id
    r = job.request
    assert r.fasta == "my_protein__1_"  # from the file name, made a valid job name
    assert (r.model_names, r.strategy, r.preset, r.que, r.gpu, r.comment) == (
        ["model_1", "model_2"], "stop-at-score:85", "reduced", "mid", 2, "from the CLI"
    )
    assert r.max_template_date.isoformat() == "2021-01-01"
    assert world.store.get_bytes(f"jobs/{job.id}/input.fasta").startswith(b">ubq test")


def test_submit_twice_with_one_idempotency_key_is_one_job(url: str, world: World, fasta: Path, capsys) -> None:
    first = af2(capsys, "submit", str(fasta), "--name", "ubq", "--idempotency-key", "k-1")
    second = af2(capsys, "submit", str(fasta), "--name", "ubq", "--idempotency-key", "k-1")
    assert first[0] == second[0] == 0 and first[1] == second[1]
    assert len(world.repo.list(None)[0]) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gpu", "9"], "gpu must be an integer from 1 to 8"),
        (["--models", "model_7"], "model_7"),
        (["--name", "bad name"], "fasta (the job name)"),
        (["--strategy", "worst"], "strategy"),
    ],
)
def test_submit_checks_options_before_sending(url: str, world: World, fasta: Path, capsys, args, says) -> None:
    code, out, err = af2(capsys, "submit", str(fasta), *args)
    assert code == 2 and says in err and out == ""
    assert world.repo.list(None)[0] == []


def test_submit_reports_the_apis_verdict_on_the_fasta(url: str, world: World, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.fasta"
    bad.write_text(">x\nMKTAYIAKQRQ1SFVKSHFSRQ\n")
    code, _, err = af2(capsys, "submit", str(bad))
    assert code == 2
    assert "line 2, column 12" in err and "(HTTP 422)" in err  # the server's message, as the server said it


def test_submit_of_an_upload_reads_it_from_the_callers_folder(url: str, world: World, fasta: Path, capsys) -> None:
    owner = world.keys.verify(world.ann).owner
    world.store.put_bytes(f"input/{owner}/lab/big.fasta", fasta.read_bytes())
    code, out, _ = af2(capsys, "submit", "--file-name", "lab/big.fasta")
    assert code == 0
    job = only_job(world)
    assert out.strip() == job.id and job.request.fasta == "big" and job.request.file_name == "lab/big.fasta"
    assert world.store.get_bytes(f"jobs/{job.id}/input.fasta").startswith(b">ubq test")

    code, _, err = af2(capsys, "submit", "--file-name", "lab/none.fasta")
    assert code == 1 and f"no object input/{owner}/lab/none.fasta" in err  # the API's 404
    for args, says in ((["--file-name", "x.fasta", str(fasta)], "not both"), ([], "not both"),
                       (["--file-name", "x.fasta", "--estimate"], "--estimate reads")):
        code, out, err = af2(capsys, "submit", *args)
        assert code == 2 and says in err and out == ""
    assert len(world.repo.list(None)[0]) == 1


REQUESTS = Path(__file__).parents[1] / "data" / "requests"


def test_submit_of_the_2021_request_file_uploads_its_files_and_makes_every_job(
    url: str, world: World, tmp_path: Path, capsys
) -> None:
    request = json.loads((REQUESTS / "command_2021.json").read_text())
    for job in request:
        (tmp_path / job["file_name"]).write_text(f">{job['fasta']}\n{SEQ}\n")
    (tmp_path / "command.json").write_text(json.dumps(request))
    code, out, err = af2(capsys, "submit", "--request", str(tmp_path / "command.json"))
    assert code == 0, err
    jobs = {j.id: j for j in world.repo.list(None)[0]}
    assert out.split() and set(out.split()) == set(jobs) and len(jobs) == 3
    owner = world.keys.verify(world.ann).owner
    assert world.store.list(f"input/{owner}/") == sorted(f"input/{owner}/{j['file_name']}" for j in request)
    by_name = {j.request.fasta: j.request for j in jobs.values()}
    assert by_name["7BW6"].model_names == ["model_1", "model_2", "model_3", "model_4", "model_5"]
    assert (by_name["1A9X"].db_preset, by_name["7K59"].db_preset) == ("reduced_dbs", "full_dbs")


def test_submit_of_the_2022_request_file_makes_every_job_complexes_included(
    url: str, world: World, tmp_path: Path, capsys
) -> None:
    request = json.loads((REQUESTS / "sample_parameters_2022.json").read_text())
    for job in request:  # a multimer file holds its chains; the others one record
        chains = 3 if job["fasta"] == "3JA9" else 2 if job["model_preset"] == "multimer" else 1
        (tmp_path / job["file_name"]).write_text("".join(f">{job['fasta']}_{i}\n{SEQ}\n" for i in range(chains)))
    code, out, err = af2(capsys, "submit", "--request", str(REQUESTS / "sample_parameters_2022.json"),
                         "--files", str(tmp_path))
    assert code == 0, err
    jobs = {j.request.fasta: j for j in world.repo.list(None)[0]}
    assert set(jobs) == {"7BW6", "3JA9", "7ALC", "6TBT"} and set(out.split()) == {j.id for j in jobs.values()}
    trimer = jobs["3JA9"].request
    assert (trimer.model_preset, trimer.predictions_per_model, jobs["7ALC"].request.predictions_per_model) == (
        "multimer", 5, 1)
    # The stored input keeps a complex's chains as records, in order.
    stored = world.store.get_bytes(f"jobs/{jobs['3JA9'].id}/input.fasta").decode()
    assert [line for line in stored.splitlines() if line.startswith(">")] == [">3JA9_0", ">3JA9_1", ">3JA9_2"]


def test_submit_of_a_request_file_names_the_element_that_cannot_apply(
    url: str, world: World, tmp_path: Path, capsys
) -> None:
    request = json.loads((REQUESTS / "sample_parameters_2022.json").read_text())
    request[1]["num_multimer_predictions_per_model"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(request))
    code, out, err = af2(capsys, "submit", "--request", str(tmp_path / "bad.json"), "--files", str(tmp_path))
    assert code == 2 and out == "" and "element 1: num_multimer_predictions_per_model" in err
    assert world.repo.list(None)[0] == [] and world.store.list("input/") == []  # checked before any upload


def test_a_fasta_over_the_inline_limit_is_uploaded_and_submitted_by_file_name(
    url: str, world: World, tmp_path: Path, capsys
) -> None:
    big = tmp_path / "many.fasta"
    long = (SEQ * (2400 // len(SEQ) + 1))[:2400]
    big.write_text("".join(f">r{i}\n{long}\n" for i in range(450)))  # within a job's records and residues
    assert big.stat().st_size > client_cli.MAX_FASTA_BYTES
    code, out, err = af2(capsys, "submit", str(big), "--models", "model_1")
    assert code == 0, err
    job = only_job(world)
    assert job.request.file_name == "many.fasta" and job.request.sequence is None
    assert world.store.get_bytes(f"jobs/{job.id}/input.fasta").count(b">") == 450
    code, out, _ = af2(capsys, "upload", str(big), "--as", "lab/again.fasta")
    assert code == 0 and out.strip() == "lab/again.fasta"


def test_submit_of_a_missing_file_is_bad_input(url: str, tmp_path: Path, capsys) -> None:
    code, _, err = af2(capsys, "submit", str(tmp_path / "nope.fasta"))
    assert code == 2 and "does not exist" in err


# ==============================================================================================================
# list / show / watch


def submit(world: World, name: str, key: str | None = None) -> str:
    from af2jobs.request import JobRequest

    principal = world.keys.verify(key or world.ann)
    assert principal is not None
    return world.service.submit(principal, JobRequest.parse({"fasta": name, "sequence": SEQ})).id


def test_list_shows_the_callers_jobs_filtered_and_limited(url: str, world: World, capsys) -> None:
    a, b, c = (submit(world, f"job-{n}") for n in "abc")
    submit(world, "bobs-job", world.bob)
    world.move(b, S.VALIDATING, S.MSA)
    world.repo.update(b, progress={"stage": "msa", "step": 1, "total": 3})
    code, out, _ = af2(capsys, "list")
    assert code == 0
    assert all(x in out for x in (a, b, c, "job-a", "MSA", "msa 1/3")) and "bobs-job" not in out
    code, out, _ = af2(capsys, "list", "--state", "msa", "--json")
    assert [j["id"] for j in json.loads(out)] == [b]
    code, out, _ = af2(capsys, "list", "--limit", "2", "--json")
    assert [j["id"] for j in json.loads(out)] == [c, b]


def test_show_prints_state_durations_links_and_log(url: str, world: World, capsys) -> None:
    job_id = submit(world, "shown")
    world.move(job_id, S.VALIDATING, S.FAILED)
    world.store.put_bytes(f"jobs/{job_id}/log.txt", b"starting\nhmmer died\n")
    code, out, _ = af2(capsys, "show", job_id)
    assert code == 0
    assert "FAILED" in out and "QUEUED" in out and "VALIDATING" in out and "hmmer died" in out
    assert f"/jobs/{job_id}/file?path=input.fasta" in out
    code, out, _ = af2(capsys, "show", job_id, "--json")
    assert json.loads(out)["log"] == ["starting", "hmmer died"]


def test_show_of_another_owners_job_says_not_found(url: str, world: World, capsys) -> None:
    job_id = submit(world, "bobs", world.bob)
    code, _, err = af2(capsys, "show", job_id)
    assert code == 1 and f"no job {job_id} (HTTP 404)" in err


class Served:
    """Records the states the API has served for jobs (by wrapping JobService.get), so a test can move a job on
    only once the watcher has seen where it was: no sleeps to tune."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        self.states: list[JobState] = []
        self._changed = threading.Condition()
        get = world.service.get

        def observed_get(*args: Any, **kwargs: Any) -> Any:
            job = get(*args, **kwargs)
            with self._changed:
                self.states.append(job.state)
                self._changed.notify_all()
            return job

        monkeypatch.setattr(world.service, "get", observed_get)

    def wait_for(self, state: JobState) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: state in self.states, timeout=10), self.states

    def then(self, *steps: Any) -> threading.Thread:
        """In a thread: for each (state, action), wait until `state` was served, then run `action`."""

        def run() -> None:
            for state, action in steps:
                self.wait_for(state)
                action()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def test_watch_follows_the_job_to_success(url: str, world: World, capsys, monkeypatch) -> None:
    job_id = submit(world, "watched")

    def to_msa() -> None:
        world.move(job_id, S.VALIDATING, S.MSA)
        world.repo.update(job_id, progress={"stage": "msa", "step": 2, "total": 3})

    served = Served(world, monkeypatch)
    thread = served.then((S.QUEUED, to_msa), (S.MSA, lambda: world.move(job_id, S.PREDICTING, S.SUCCEEDED)))
    code, _, err = af2(capsys, "watch", job_id, "--interval", "0.05")
    thread.join()
    assert code == 0
    assert f"{job_id} QUEUED" in err and "MSA · msa 2/3" in err and f"{job_id} SUCCEEDED" in err


def test_watch_log_prints_each_new_log_line_once(url: str, world: World, capsys, monkeypatch) -> None:
    from af2jobs import errors, layout

    job_id = submit(world, "logged")
    key = layout.log_key(job_id)

    def log(*lines: str) -> None:
        try:
            old = world.store.get_bytes(key).decode()
        except errors.NotFoundError:
            old = ""
        world.store.put_bytes(key, (old + "".join(f"{line}\n" for line in lines)).encode())

    def to_msa() -> None:
        log("searching uniref90", "uniref90: 120 hits")
        world.move(job_id, S.VALIDATING, S.MSA)

    def to_done() -> None:
        log("features: 121 rows")
        world.move(job_id, S.PREDICTING, S.SUCCEEDED)

    served = Served(world, monkeypatch)
    thread = served.then((S.QUEUED, to_msa), (S.MSA, to_done))
    code, _, err = af2(capsys, "watch", job_id, "--interval", "0.05", "--log")
    thread.join()
    assert code == 0
    printed = [line.removeprefix("  | ") for line in err.splitlines() if line.startswith("  | ")]
    assert printed == ["searching uniref90", "uniref90: 120 hits", "features: 121 rows"]


def test_new_log_lines_follow_a_moving_tail() -> None:
    from af2jobs.cli.client import new_log_lines

    assert new_log_lines([], ["a", "b"]) == ["a", "b"]
    assert new_log_lines(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert new_log_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # the window moved on
    assert new_log_lines(["a", "b"], ["a", "b"]) == []
    assert new_log_lines(["x"], ["y"]) == ["y"]  # nothing in common: all of it is new


def test_watch_of_a_failed_job_exits_1_with_its_error(url: str, world: World, capsys) -> None:
    from af2jobs.models import JobError

    job_id = submit(world, "doomed")
    world.move(job_id, S.VALIDATING)
    world.repo.transition(job_id, {S.VALIDATING}, S.FAILED, error=JobError(type="StageError", message="msa: disk full"))
    code, _, err = af2(capsys, "watch", job_id, "--interval", "0.05")
    assert code == 1 and "FAILED: StageError: msa: disk full" in err


def test_watch_draws_a_progress_bar_on_a_terminal(url: str, world: World, monkeypatch) -> None:
    job_id = submit(world, "bar")
    screen = io.StringIO()
    monkeypatch.setattr(client_cli, "_stderr", lambda: Console(file=screen, force_terminal=True, width=100))
    thread = Served(world, monkeypatch).then((S.QUEUED, lambda: world.move(job_id, S.CANCELLED)))
    assert main(["watch", job_id, "--interval", "0.05"]) == 1  # cancelled is not success
    thread.join()
    text = screen.getvalue()
    assert "\x1b[" in text and "━" in text and f"{job_id} CANCELLED" in text


# ==============================================================================================================
# cancel / delete / download


def test_cancel_one_and_all(url: str, world: World, capsys) -> None:
    one, two, three = (submit(world, f"c{n}") for n in range(3))
    world.move(three, S.VALIDATING)
    code, out, _ = af2(capsys, "cancel", one)
    assert code == 0 and out.strip() == f"{one} CANCELLED"
    code, out, _ = af2(capsys, "cancel", "--all")
    assert code == 0 and set(out.split("\n")) >= {f"{two} CANCELLED", f"{three} CANCELLING"}
    code, _, err = af2(capsys, "cancel", one)
    assert code == 1 and "already CANCELLED (HTTP 409)" in err


def test_delete_one_refuses_a_running_job_and_finished_removes_the_rest(url: str, world: World, capsys) -> None:
    running, done, cancelled = (submit(world, f"d{n}") for n in range(3))
    world.move(running, S.VALIDATING)
    world.move(done, S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED)
    world.move(cancelled, S.CANCELLED)
    code, _, err = af2(capsys, "delete", running)
    assert code == 1 and "cancel it before deleting it (HTTP 409)" in err
    code, out, _ = af2(capsys, "delete", cancelled)
    assert code == 0 and out.strip() == f"{cancelled} deleted"
    code, out, _ = af2(capsys, "delete", "--finished")
    assert code == 0 and out.strip() == f"{done} deleted"
    assert [j.id for j in world.repo.list(None)[0]] == [running]


def test_download_fetches_every_file_of_the_job(url: str, world: World, tmp_path: Path, capsys) -> None:
    job_id = submit(world, "dl")
    files = {"ranked_0.pdb": b"ATOM      1  N   MET A   1\n", "msas/uniref90.sto": b"# STOCKHOLM 1.0\n//\n"}
    for name, data in files.items():
        world.store.put_bytes(f"jobs/{job_id}/{name}", data)
    other = submit(world, "other")
    world.store.put_bytes(f"jobs/{other}/ranked_0.pdb", b"NOT MINE")
    code, _, err = af2(capsys, "download", job_id, str(tmp_path / "out"))
    assert code == 0 and "3 file(s)" in err
    out = tmp_path / "out"
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {**files, "input.fasta": world.store.get_bytes(f"jobs/{job_id}/input.fasta")}


# ==============================================================================================================
# Failures people meet


def test_connection_refused_names_the_url(monkeypatch, capsys) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = af2(capsys, "list", "--api-url", dead, "--api-key", "k")
    assert code == 1 and f"cannot connect to {dead}: connection refused" in err


def test_a_wrong_key_prints_the_apis_message(url: str, capsys) -> None:
    code, _, err = af2(capsys, "list", "--api-key", "af2_" + "0" * 16 + "_" + "x" * 43)
    assert code == 1 and "invalid or revoked API key (HTTP 401)" in err


def test_missing_url_or_key_is_bad_input(monkeypatch, capsys) -> None:
    monkeypatch.delenv("AF2_API_URL", raising=False)
    monkeypatch.delenv("AF2_API_KEY", raising=False)
    assert af2(capsys, "list", "--api-key", "k")[0] == 2
    code, _, err = af2(capsys, "list", "--api-url", "http://127.0.0.1:1")
    assert code == 2 and "AF2_API_KEY" in err


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Plays an API whose file route redirects to storage (as on AWS), and the storage; records who sent a key."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/api/jobs/"):
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/bucket/x?X-Amz-Signature=s")
            self.end_headers()
        else:
            body = b"object bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_download_follows_a_redirect_to_storage_without_sending_the_key(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = ApiClient(base_url=f"http://127.0.0.1:{server.server_port}/api", key="secret-key")
        size = api.download("/jobs/abc/file?path=ranked_0.pdb", tmp_path / "ranked_0.pdb")
    finally:
        server.shutdown()
    assert size == 12 and (tmp_path / "ranked_0.pdb").read_bytes() == b"object bytes"
    assert _Recorder.seen == [
        ("/api/jobs/abc/file?path=ranked_0.pdb", "secret-key"),
        ("/bucket/x?X-Amz-Signature=s", None),
    ]


def test_download_refuses_paths_that_leave_the_directory(tmp_path: Path) -> None:
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(Exception, match="unsafe path"):
            client_cli.local_path(tmp_path, bad)
    assert client_cli.local_path(tmp_path, "msas/a.sto") == tmp_path / "msas" / "a.sto"
