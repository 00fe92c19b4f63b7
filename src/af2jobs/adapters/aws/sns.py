"""The AWS Notifier: one SNS message per job event, readable text for people and JSON for programs.

Published with MessageStructure=json: email (and any protocol without its own entry) gets the text; sqs, lambda,
http and https subscribers get the JSON document. Message attributes `state`, `owner` and `event` let a
subscription filter, e.g. {"owner": ["alice"], "state": ["SUCCEEDED", "FAILED"]}.

For a SUCCEEDED job the message reads the job's own summaries from the artifact store (any `predictions.json`
and `versions.json` under jobs/<id>/), so it can name the best model, its mean pLDDT and pTM, and say UNTRAINED
when the parameters were. Download links are presigned URLs; the message states until when they work.

The JSON document uses the field names of the local notifier's messages (job_name, records, untrained_note,
download, ...), so one consumer reads both; it adds `links` and `links_expire_at`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3

from af2jobs import errors

# Phase arithmetic and the UNTRAINED wording are shared with the local notifier, so both modes say the same.
from af2jobs.adapters.local.notify import UNTRAINED_LINE, event_fields, phase_seconds
from af2jobs.models import Job, JobEvent, JobState
from af2jobs.ports import ArtifactStore

MAX_SUBJECT = 99  # SNS allows "less than 100 characters"
# SNS takes at most 256 KiB per message (all protocol variants together); links are what grows, so they go first.
MAX_MESSAGE_BYTES = 250_000
MAX_LINKS = 10
LINK_SECONDS = 24 * 3600
# The files worth a link: the best structure of each record, in both formats, and the run's summary.
LINKED_FILES = ("report.html", "ranked_0.pdb", "ranked_0.cif", "predictions.json")
RECORD_FIELDS = ("name", "dir", "best_model", "mean_plddt", "ptm", "untrained")
_MACHINE_PROTOCOLS = ("sqs", "lambda", "http", "https")


@dataclass(frozen=True)
class Results:
    """What a finished job's summaries say: the best model per record, whether parameters were UNTRAINED."""

    records: list[dict[str, Any]] = field(default_factory=list)
    untrained_note: str | None = None
    link_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    data: dict[str, Any]
    attributes: dict[str, str]


# ---------------------------------------------------------------------------------------------------------------
# Reading the job's summaries


def _read_json(store: ArtifactStore, key: str) -> Any:
    try:
        return json.loads(store.get_bytes(key))
    except (errors.NotFoundError, ValueError):
        return None  # a missing or unreadable summary leaves the message shorter, never unsent


def read_results(job: Job, store: ArtifactStore) -> Results:
    keys = store.list(f"jobs/{job.id}/")
    records: list[dict[str, Any]] = []
    untrained: str | None = None
    for key in (k for k in keys if k.endswith("/predictions.json")):
        summary = _read_json(store, key) or {}
        for record in summary.get("records", []):
            records.append({k: record.get(k) for k in RECORD_FIELDS})
            if record.get("untrained"):
                untrained = UNTRAINED_LINE
    for key in (k for k in keys if k.endswith("/versions.json")):
        versions = _read_json(store, key) or {}
        if versions.get("params_status") == "UNTRAINED":
            untrained = UNTRAINED_LINE
    links = [k for k in keys if k.rsplit("/", 1)[-1] in LINKED_FILES][:MAX_LINKS]
    return Results(records=records, untrained_note=untrained, link_keys=links)


# ---------------------------------------------------------------------------------------------------------------
# Composing


def _duration(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _best_line(record: dict[str, Any], several: bool) -> str:
    line = f"{record['name']}: " if several else ""
    line += f"best model {record['best_model']}"
    if record.get("mean_plddt") is not None:
        line += f", mean pLDDT {record['mean_plddt']:.2f}"
    if record.get("ptm") is not None:
        line += f", pTM {record['ptm']:.3f}"
    return line


def _text(job: Job, event: JobEvent, results: Results, links: list[dict[str, str]], expires_at: str) -> str:
    name = job.request.fasta
    lines = [f"Job {name} ({job.id}) is {job.state.value} ({event.value}).", f"Owner: {job.owner}"]
    if job.request.comment:
        lines.append(f"Comment: {job.request.comment}")
    durations = phase_seconds(job)
    if durations:
        lines.append("Phases: " + ", ".join(f"{p} {_duration(s)}" for p, s in durations.items()))
    usd = (job.cost or {}).get("usd")
    if isinstance(usd, dict) and "total_usd" in usd:
        lines.append(f"Cost: ${usd['total_usd']:.4f} (CPU ${usd['cpu_usd']:.4f}, GPU ${usd['gpu_usd']:.4f}; "
                     f"{usd.get('region', '')} list prices of {usd.get('prices_as_of', '?')})")
    if job.error is not None:
        stage = f" in stage {job.error.stage}" if job.error.stage else ""
        lines.append(f"Error{stage}: {job.error.type}: {job.error.message}")
    lines += [_best_line(record, len(results.records) > 1) for record in results.records]
    if results.untrained_note:
        lines.append(results.untrained_note)
    if links:
        lines.append(f"Download links (valid until {expires_at}):")
        lines += [f"  {link['key']}\n    {link['url']}" for link in links]
    if job.state in (JobState.SUCCEEDED, JobState.FAILED):
        lines.append(f"Download all files: {_download(job)}")
    return "\n".join(lines) + "\n"


def _download(job: Job) -> str:
    return f"af2 download {job.id} DIR"


def _subject(job: Job) -> str:
    # The state always fits; a long job name gives way.
    room = MAX_SUBJECT - len(f"af2jobs  {job.state.value}")
    return f"af2jobs {job.request.fasta[:room]} {job.state.value}"


def compose(job: Job, event: JobEvent, store: ArtifactStore, link_seconds: int = LINK_SECONDS) -> Message:
    """The message for one event. Reads the job's summaries and signs links only for a SUCCEEDED job."""
    results = read_results(job, store) if job.state is JobState.SUCCEEDED else Results()
    expires = datetime.now(timezone.utc) + timedelta(seconds=link_seconds)
    expires_at = expires.strftime("%Y-%m-%d %H:%M UTC")
    links = [{"key": key, "url": store.url(key, link_seconds)} for key in results.link_keys]
    data = {
        **event_fields(job, event),  # as the local notifier's message has them
        "records": results.records,
        "untrained": results.untrained_note is not None,
        "untrained_note": results.untrained_note,
        "links": links,
        "links_expire_at": expires.isoformat(timespec="seconds") if links else None,
        "download": _download(job),
    }
    return Message(
        subject=_subject(job),
        text=_text(job, event, results, links, expires_at),
        data=data,
        attributes={"state": job.state.value, "owner": job.owner, "event": event.value},
    )


def sns_payload(message: Message) -> str:
    """The MessageStructure=json body, with links dropped (the CLI line remains) if it would exceed SNS's limit."""
    document = json.dumps(message.data)
    body = json.dumps({"default": message.text, **{p: document for p in _MACHINE_PROTOCOLS}})
    if len(body.encode()) <= MAX_MESSAGE_BYTES:
        return body
    lean = {**message.data, "links": [], "links_expire_at": None}
    text = message.text.split("Download links", 1)[0] + f"Download all files: {message.data['download']}\n"
    return json.dumps({"default": text, **{p: json.dumps(lean) for p in _MACHINE_PROTOCOLS}})


class SnsNotifier:
    def __init__(self, topic_arn: str, store: ArtifactStore, client: Any = None) -> None:
        self.topic_arn = topic_arn
        self._store = store
        self._client = client if client is not None else boto3.client("sns")

    def notify(self, job: Job, event: JobEvent) -> None:
        message = compose(job, event, self._store)
        self._client.publish(
            TopicArn=self.topic_arn,
            Subject=message.subject,
            MessageStructure="json",
            Message=sns_payload(message),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in message.attributes.items()
            },
        )
