"""The local Notifier: one JSON file per event in an outbox directory, plus e-mail (SMTP) and a webhook (JSON POST)
when they are configured.

The outbox file is the record that an event happened; e-mail and webhook are deliveries of it. A delivery that
fails is logged with the job id and never raised: the job's state change is already stored, and failing the
caller (a submit, the worker finishing a job) over a mail server being down would be worse than a missed mail.
Deliveries are synchronous with a short timeout; a refused connection fails at once, only a silent host costs
the timeout.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import tempfile
import urllib.request
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from af2jobs import errors
from af2jobs.models import Job, JobEvent
from af2jobs.ports import ArtifactStore

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 10.0
# The per-job summary the local worker writes (the same layout `af2 predict` writes at the top of its output).
PREDICTIONS_ARTIFACT = "predictions.json"
UNTRAINED_LINE = (
    "UNTRAINED: these structures were predicted with untrained (random) parameters; they and their scores carry "
    "no biological meaning."
)
# Files worth a line in the e-mail body; the JSON message lists every artifact.
_HEADLINE_SUFFIXES = ("report.html", "ranked_0.pdb", "ranked_0.cif", PREDICTIONS_ARTIFACT, "log.txt")


# ---------------------------------------------------------------------------------------------------------------
# The message


def _seconds_between(start: str, end: str) -> float:
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def phase_seconds(job: Job) -> dict[str, float]:
    """Wall-clock seconds of each phase that has ended, from the job record's phase times (waiting included);
    a terminal state is not a phase and is left out."""
    ended = [(state, p) for state, p in job.phases.items() if p.ended_at is not None and state != job.state.value]
    ended.sort(key=lambda item: item[1].started_at)  # in the order they happened
    return {state: _seconds_between(p.started_at, p.ended_at) for state, p in ended}


def _read_predictions(job: Job, store: ArtifactStore | None) -> list[dict[str, Any]]:
    key = job.artifacts.get(PREDICTIONS_ARTIFACT)
    if store is None or key is None:
        return []
    try:
        return list(json.loads(store.get_bytes(key))["records"])
    except (errors.Af2JobsError, ValueError, KeyError, TypeError):
        # A missing or unreadable summary makes a shorter message, not a lost notification.
        log.warning("job %s: could not read %s", job.id, key, extra={"job_id": job.id})
        return []


def _link(key: str, store: ArtifactStore | None) -> str:
    if store is None:
        return key
    try:
        return store.url(key)
    except errors.Af2JobsError:
        return key


def event_fields(job: Job, event: JobEvent) -> dict[str, Any]:
    """What every notification says of the job and the event, locally and on AWS (SNS)."""
    return {
        "event": event.value,
        "job_id": job.id,
        "job_name": job.request.fasta,
        "owner": job.owner,
        "state": job.state.value,
        "comment": job.request.comment,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "phase_seconds": phase_seconds(job),
        "cost_usd": (job.cost or {}).get("usd"),
        "error": job.error.model_dump() if job.error is not None else None,
    }


def build_message(job: Job, event: JobEvent, store: ArtifactStore | None = None) -> dict[str, Any]:
    """Everything a person or a script needs about one job event, as JSON-ready data."""
    records = _read_predictions(job, store)
    untrained = any(r.get("untrained") for r in records)
    return {
        **event_fields(job, event),
        "measured_seconds": {k: v for k, v in (job.cost or {}).items() if k != "usd"},
        "records": [
            {k: r.get(k) for k in ("name", "dir", "best_model", "mean_plddt", "ptm", "untrained")} for r in records
        ],
        "untrained": untrained,
        "untrained_note": UNTRAINED_LINE if untrained else None,
        "artifacts": {name: _link(key, store) for name, key in sorted(job.artifacts.items())},
        "download": f"af2 download {job.id} DIR",
    }


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_text(message: dict[str, Any]) -> str:
    """The plain-text e-mail body for a message from build_message."""
    lines = [f"Job {message['job_name']} ({message['job_id']}) is {message['state']}."]
    if message["comment"]:
        lines.append(f"Comment: {message['comment']}")
    if message["untrained_note"]:
        lines.append(message["untrained_note"])
    error = message["error"]
    if error is not None:
        lines.append(f"Error in stage {error['stage'] or '-'}: {error['type']}: {error['message']}")
    for r in message["records"]:
        lines.append(
            f"{r['name']}: best model {r['best_model']}, mean pLDDT {_fmt(r['mean_plddt'], 1)}, "
            f"pTM {_fmt(r['ptm'], 3)}"
        )
    if message["phase_seconds"]:
        phases = ", ".join(f"{state} {seconds:.1f} s" for state, seconds in message["phase_seconds"].items())
        lines.append(f"Phases: {phases}")
    cost = message.get("cost_usd")
    if cost:
        lines.append(
            f"Cost: ${cost['total_usd']:.4f} (CPU ${cost['cpu_usd']:.4f} on {cost['cpu_instance']}, GPU "
            f"${cost['gpu_usd']:.4f} on {cost['gpu_instance']}; {cost['region']} list prices of {cost['prices_as_of']})"
        )
    headline = {k: v for k, v in message["artifacts"].items() if k.endswith(_HEADLINE_SUFFIXES)}
    if headline:
        lines.append("Files:")
        lines += [f"  {name}: {url}" for name, url in headline.items()]
        if len(message["artifacts"]) > len(headline):
            lines.append(f"  ... and {len(message['artifacts']) - len(headline)} more")
    if message["state"] == "SUCCEEDED":
        lines.append(f"Download everything: {message['download']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Deliveries


def _stamp() -> str:
    # Sortable and safe in a file name (an ISO timestamp has ':' and '+').
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def write_outbox(outbox: Path, message: dict[str, Any]) -> Path:
    """Write the message atomically as `<time>-<job id>-<event>-<n>.json`; readers never see a partial file."""
    outbox.mkdir(parents=True, exist_ok=True)
    final = outbox / f"{_stamp()}-{message['job_id']}-{message['event']}-{uuid.uuid4().hex[:6]}.json"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=outbox)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(message, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


class LocalNotifier:
    """Notifier for `af2 serve`: outbox always; e-mail when smtp_host and `to` are set; webhook when its URL is."""

    def __init__(
        self,
        outbox_dir: str | Path,
        smtp_host: str | None = None,
        smtp_port: int = 25,
        smtp_from: str = "af2jobs@localhost",
        to: str | None = None,
        webhook_url: str | None = None,
        *,
        store: ArtifactStore | None = None,
        timeout_s: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        self.outbox_dir = Path(outbox_dir)
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.smtp_from = smtp_from
        self.to = to
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            # urllib would also open file: and ftp: URLs; a webhook is HTTP.
            raise errors.ConfigurationError(f"AF2_WEBHOOK_URL must be an http(s) URL, not {webhook_url!r}")
        self.webhook_url = webhook_url
        self.store = store  # to read results and give links; without it the message carries store keys only
        self.timeout_s = timeout_s

    def notify(self, job: Job, event: JobEvent) -> None:
        message = build_message(job, event, self.store)
        self._deliver("outbox", job, lambda: write_outbox(self.outbox_dir, message))
        if self.smtp_host and self.to:
            self._deliver("e-mail", job, lambda: self._send_email(message))
        if self.webhook_url:
            self._deliver("webhook", job, lambda: self._post_webhook(message))

    def _deliver(self, channel: str, job: Job, send) -> None:
        try:
            send()
        except Exception:
            log.exception("job %s: %s notification failed", job.id, channel, extra={"job_id": job.id})

    def _send_email(self, message: dict[str, Any]) -> None:
        mail = EmailMessage()
        mail["Subject"] = f"af2jobs: {message['job_name']} {message['state']}"
        mail["From"] = self.smtp_from
        mail["To"] = self.to
        mail.set_content(render_text(message))
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_s) as smtp:
            smtp.send_message(mail)

    def _post_webhook(self, message: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(message).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "af2jobs"},
            method="POST",
        )
        # urlopen raises HTTPError on a non-2xx answer, which _deliver logs.
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()
