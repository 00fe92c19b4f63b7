"""`af2 submit|list|show|watch|cancel|delete|download`: the job API from the command line, local or AWS alike.

HTTP is af2jobs.cli.api_client's. The API URL and key come from --api-url/--api-key or AF2_API_URL/AF2_API_KEY. Errors are the
API's own messages; exit codes follow main.py: 2 for input the API rejected as invalid (400/413/415/422), 1 for
anything else.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from af2jobs import errors, msafile
from af2jobs.cli import requestflags
from af2jobs.cli.api_client import ApiClient, is_absolute
from af2jobs.models import JobState
from af2jobs.request import JobRequest
from af2jobs.settings import Settings

WATCH_INTERVAL_S = 2.0
MAX_FASTA_BYTES = 1_000_000  # JobRequest's inline limit; larger inputs go under input/ and use file_name
_TERMINAL = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}


# ---------------------------------------------------------------------------------------------------------------
# Commands


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", help="the job API's base URL (default: AF2_API_URL)")
    common.add_argument("--api-key", help="your API key (default: AF2_API_KEY)")

    p = sub.add_parser("submit", parents=[common], help="submit a FASTA file as a job; prints the job id")
    p.add_argument("fasta", type=Path, nargs="?", help="FASTA file (or a bare sequence in a text file); one over "
                                                       "the inline limit is uploaded first")
    p.add_argument("--file-name", help="instead of FASTA: a file already uploaded to your folder input/<owner>/, "
                                       "by its path there (for inputs over the inline limit)")
    p.add_argument("--request", type=Path, help="instead of FASTA: a request file in the original platform's form "
                                                "(a JSON job, or an array of jobs); the file_name of each is "
                                                "uploaded from --files first when it is there")
    p.add_argument("--files", type=Path, help="with --request: the folder holding its file_name files (default: "
                                              "the request file's folder)")
    requestflags.add(p, "submit")
    p.add_argument("--msa", action="append", default=[], metavar="[NAME=]FILE",
                   help="your own MSA (A3M or Stockholm, the query first) for a record: its search is skipped; "
                        "repeat with NAME=FILE for several records. A large one is uploaded first")
    p.add_argument("--idempotency-key", help="retrying with the same key returns the same job")
    p.add_argument("--estimate", action="store_true",
                   help="print the estimated time and cost (JSON) and do not submit; needs no API")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("upload", parents=[common], help="upload a file to your folder input/<owner>/ (for "
                                                         "file_name); prints its name there")
    p.add_argument("file", type=Path)
    p.add_argument("--as", dest="file_name", help="its path in input/<owner>/ (default: the file's name)")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("list", parents=[common], help="list your jobs, newest first")
    p.add_argument("--state", type=str.upper, choices=[s.value for s in JobState], help="only jobs in this state")
    p.add_argument("--limit", type=int, default=50, help="at most this many jobs (default: 50)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="show one job")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("watch", parents=[common], help="follow a job's progress until it finishes")
    p.add_argument("job_id")
    p.add_argument("--interval", type=float, default=WATCH_INTERVAL_S, help="seconds between polls (default: 2)")
    p.add_argument("--log", action="store_true",
                   help="print the job's log lines as they come (on AWS, the running stage's CloudWatch log)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("cancel", parents=[common], help="cancel a job, or all of your unfinished jobs")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?")
    which.add_argument("--all", action="store_true", help="every unfinished job of yours")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("delete", parents=[common], help="delete a finished job, or all of your finished jobs")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?")
    which.add_argument("--finished", action="store_true", help="every finished job of yours")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("download", parents=[common], help="download every file of a job into a directory")
    p.add_argument("job_id")
    p.add_argument("dir", type=Path)
    p.set_defaults(func=cmd_download)


def client_from(args: argparse.Namespace) -> ApiClient:
    settings = Settings()
    url = args.api_url or settings.api_url
    key = args.api_key or settings.api_key
    if not url:
        raise errors.ValidationError("no API URL: pass --api-url or set AF2_API_URL", field="api_url")
    if not is_absolute(url):
        raise errors.ValidationError(f"API URL {url!r} must start with http:// or https://", field="api_url")
    if not key:
        raise errors.ValidationError("no API key: pass --api-key or set AF2_API_KEY", field="api_key")
    return ApiClient(base_url=url, key=key)


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/jobs/{urllib.parse.quote(job_id, safe='')}{suffix}"


def _stdout() -> Console:
    return Console(soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


# -- submit ----------------------------------------------------------------------------------------------------


def _read_fasta(path: Path) -> str:
    if not path.is_file():
        raise errors.ValidationError(f"{path} does not exist or is not a file", field="fasta")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise errors.ValidationError(f"{path} is not UTF-8 text", field="fasta") from None


def _too_big_to_inline(path: Path | None) -> bool:
    return path is not None and path.is_file() and path.stat().st_size > MAX_FASTA_BYTES


def submission(args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """The request body, validated here with the API's own schema so that mistakes cost no round trip, and the
    files to upload first (local path, file_name): a FASTA over the inline limit, large MSAs."""
    if (args.fasta is None) == (args.file_name is None):
        raise errors.ValidationError("give a FASTA file or --file-name (an upload under input/<owner>/), not both",
                                     field="fasta")
    upload = _too_big_to_inline(args.fasta)
    uploads = [(args.fasta, args.fasta.name)] if upload else []
    fields: dict[str, Any] = {
        "fasta": requestflags.job_name(args.fasta or Path(args.file_name)),
        "sequence": _read_fasta(args.fasta) if args.fasta is not None and not upload else None,
        "file_name": args.fasta.name if upload else args.file_name,
        **requestflags.fields(args),
    }
    body = {k: v for k, v in fields.items() if v is not None}
    if args.msa:
        if args.fasta is None:
            raise errors.ValidationError("--msa needs the FASTA file here (to match MSAs to records)", field="msa")
        names = [r.name for r in JobRequest.parse_sequence(args.fasta.read_bytes(), name=body["fasta"],
                                                          max_length=Settings().max_length)]
        for name, path in msafile.assign(args.msa, names).items():
            if path.stat().st_size > MAX_FASTA_BYTES // 2:
                body.setdefault("msa_file_names", {})[name] = f"msa/{path.name}"
                uploads.append((path, f"msa/{path.name}"))
            else:
                body.setdefault("msa", {})[name] = _read_fasta(path)
    requestflags.parse(body, {"file_name": "--file-name", "sequence": "FASTA"})
    return body, uploads


def _request_file(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The jobs of a request file (one JSON job or an array), each checked with the API's own schema."""
    try:
        data = json.loads(args.request.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise errors.ValidationError(f"{args.request}: not a readable JSON request file ({exc})", field="request") \
            from None
    jobs = data if isinstance(data, list) else [data]
    for i, job in enumerate(jobs):
        try:
            JobRequest.parse(job)
        except errors.Af2JobsError as exc:
            raise exc.at(i) from None
    return jobs


def cmd_submit_request(args: argparse.Namespace) -> int:
    jobs = _request_file(args)
    client = client_from(args)
    folder = args.files or args.request.parent
    for job in jobs:
        local = folder / job["file_name"] if job.get("file_name") else None
        if local is not None and local.is_file():
            client.upload(local, job["file_name"])
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    answer = client.call("POST", "/jobs", body=jobs, headers=headers)
    for job in answer["jobs"]:
        print(job["id"])
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise errors.ValidationError(f"{args.file} does not exist or is not a file", field="file")
    print(client_from(args).upload(args.file, args.file_name or args.file.name)["file_name"])
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    if args.request is not None:
        if args.fasta is not None or args.file_name is not None:
            raise errors.ValidationError("give --request, or a FASTA file / --file-name, not both", field="request")
        return cmd_submit_request(args)
    body, uploads = submission(args)
    if getattr(args, "estimate", False):
        from af2jobs.cost import estimate_request

        if args.fasta is None:
            raise errors.ValidationError("--estimate reads the sequence lengths from a FASTA file, not --file-name",
                                         field="file_name")

        request = JobRequest.parse(body)
        records = request.records(args.fasta.read_bytes(), max_length=Settings().max_length)
        lengths = [len(r.sequence) for r in records]
        print(json.dumps(estimate_request(request, lengths), indent=2))
        return 0
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    client = client_from(args)
    for path, file_name in uploads:
        client.upload(path, file_name)
    job = client.call("POST", "/jobs", body=body, headers=headers)
    print(job["id"])
    return 0


# -- list / show -----------------------------------------------------------------------------------------------


def _progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress")
    if not progress:
        return ""
    text = progress["stage"]
    if progress.get("total"):
        text += f" {progress['step']}/{progress['total']}"
    return text


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise errors.ValidationError("--limit must be at least 1", field="limit")
    client = client_from(args)
    jobs: list[dict[str, Any]] = []
    token: str | None = None
    while len(jobs) < args.limit:
        query = {"state": args.state, "limit": min(args.limit - len(jobs), 1000), "next_token": token}
        page = client.call("GET", "/jobs", query=query)
        jobs.extend(page["jobs"])
        token = page.get("next_token")
        if token is None:
            break
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    table = Table("ID", "NAME", "STATE", "PROGRESS", "CREATED", box=None, pad_edge=False)
    for job in jobs:
        table.add_row(job["id"], job["request"]["fasta"], job["state"], _progress_text(job), job["created_at"][:19])
    _stdout().print(table)
    return 0


def _print_job(job: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{job['request']['fasta']}[/]  {job['id']}  owner {job['owner']}")
    console.print(f"state     {job['state']}" + (f"  ({_progress_text(job)})" if job.get("progress") else ""))
    for state, seconds in job.get("durations", {}).items():
        console.print(f"  {state:<11} {seconds:10.1f} s")
    if job.get("error"):
        err = job["error"]
        stage = f" (stage {err['stage']})" if err.get("stage") else ""
        console.print(f"error     {err['type']}: {err['message']}{stage}")
    if job.get("cost"):
        console.print(f"cost      {json.dumps(job['cost'])}")
    for name, url in job.get("links", {}).items():
        console.print(f"file      {name}  {url}", markup=False, highlight=False)
    if job.get("log"):
        console.print("log (last lines):")
        for line in job["log"]:
            console.print(f"  {line}", markup=False, highlight=False)


def cmd_show(args: argparse.Namespace) -> int:
    job = client_from(args).call("GET", _job_path(args.job_id))
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        _print_job(job, _stdout())
    return 0


# -- watch -----------------------------------------------------------------------------------------------------


def _describe(job: dict[str, Any]) -> str:
    text = _progress_text(job) if job["state"] not in _TERMINAL else ""  # a finished job's last stage is history
    return f"{job['state']}" + (f" · {text}" if text else "")


def _watch_outcome(job: dict[str, Any], console: Console) -> int:
    state = job["state"]
    if state == JobState.SUCCEEDED.value:
        console.print(f"{job['id']} SUCCEEDED")
        return 0
    err = job.get("error") or {}
    detail = f": {err.get('type')}: {err.get('message')}" if err else ""
    console.print(f"{job['id']} {state}{detail}")
    return 1


def new_log_lines(seen: list[str], latest: list[str]) -> list[str]:
    """The lines of `latest` (a log's last lines, now) that follow what `seen` (its last lines, before) ended with."""
    for overlap in range(min(len(seen), len(latest)), 0, -1):
        if seen[-overlap:] == latest[:overlap]:
            return latest[overlap:]
    return latest


class _LogFollower:
    def __init__(self, console: Console, enabled: bool) -> None:
        self.console, self.enabled, self.seen = console, enabled, []

    def show(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        latest = list(job.get("log") or [])
        for line in new_log_lines(self.seen, latest):
            self.console.print(f"  | {line}", highlight=False, markup=False)
        self.seen = latest


def _watch_bar(client: ApiClient, job: dict[str, Any], interval: float, console: Console,
               log: _LogFollower) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bars:
        task: TaskID = bars.add_task(_describe(job), total=None, step="")
        while job["state"] not in _TERMINAL:
            _update_bar(bars, task, job)
            log.show(job)
            time.sleep(interval)
            job = client.call("GET", _job_path(job["id"]))
        log.show(job)
        bars.update(task, description=job["state"], total=1, completed=1, step="")
    return job


def _update_bar(bars: Progress, task: TaskID, job: dict[str, Any]) -> None:
    progress = job.get("progress") or {}
    total = progress.get("total")
    step = f"{progress.get('step', 0)}/{total}" if total else ""
    bars.update(task, description=_describe(job), total=total or None, completed=progress.get("step", 0), step=step)


def _watch_lines(client: ApiClient, job: dict[str, Any], interval: float, console: Console,
                 log: _LogFollower) -> dict[str, Any]:
    """Without a terminal (logs, CI): one line per change instead of a redrawn bar."""
    last = None
    while True:
        line = _describe(job)
        if line != last:
            console.print(f"{job['id']} {line}", highlight=False)
            last = line
        log.show(job)
        if job["state"] in _TERMINAL:
            return job
        time.sleep(interval)
        job = client.call("GET", _job_path(job["id"]))


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise errors.ValidationError("--interval must be positive", field="interval")
    client = client_from(args)
    console = _stderr()
    job = client.call("GET", _job_path(args.job_id))
    follow = _watch_bar if console.is_terminal else _watch_lines
    log = _LogFollower(console, getattr(args, "log", False))
    return _watch_outcome(follow(client, job, args.interval, console, log), console)


# -- cancel / delete -------------------------------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> int:
    client = client_from(args)
    if args.all:
        jobs = client.call("POST", "/jobs/cancel")["jobs"]
        for job in jobs:
            print(f"{job['id']} {job['state']}")
        _stderr().print(f"{len(jobs)} job(s) cancelled or cancelling")
        return 0
    job = client.call("POST", _job_path(args.job_id, "/cancel"))
    print(f"{job['id']} {job['state']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    client = client_from(args)
    if args.finished:
        deleted = client.call("DELETE", "/jobs")["deleted"]
    else:
        deleted = client.call("DELETE", _job_path(args.job_id))["deleted"]
    for job_id in deleted:
        print(f"{job_id} deleted")
    return 0


# -- download --------------------------------------------------------------------------------------------------


def local_path(root: Path, relative: str) -> Path:
    """Where a job file goes under `root`; refuses paths that would land outside it (a hostile server)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".", "") for p in parts):
        raise errors.Af2JobsError(f"the API listed a file with an unsafe path: {relative!r}")
    return root.joinpath(*parts)


def cmd_download(args: argparse.Namespace) -> int:
    client = client_from(args)
    files = client.call("GET", _job_path(args.job_id, "/files"))["files"]
    root: Path = args.dir
    total = 0
    for item in files:
        total += client.download(item["url"], local_path(root, item["path"]))
    _stderr().print(f"{len(files)} file(s), {total:,} bytes -> {root}")
    return 0
