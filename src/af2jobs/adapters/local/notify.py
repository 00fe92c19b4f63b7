"""The local Notifier: one JSON file per event in an outbox directory, plus e-mail (SMTP) and a webhook (JSON POST)
when they are configured. The message is af2jobs.notification's; this module only delivers it.

The outbox file is the record that an event happened; e-mail and webhook are deliveries of it. A delivery that
fails is logged with the job id and never raised: the job's state change is already stored, and failing the
caller (a submit, the worker finishing a job) over a mail server being down would be worse than a missed mail.
Deliveries are synchronous with a short timeout; a refused connection fails at once, only a silent host costs
the timeout.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from af2jobs import atomic, errors, notification
from af2jobs.links import LinkSigner
from af2jobs.models import Job, JobEvent
from af2jobs.ports import ArtifactStore

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------------------------
# Deliveries


def _stamp() -> str:
    # Sortable and safe in a file name (an ISO timestamp has ':' and '+').
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def write_outbox(outbox: Path, message: dict[str, Any]) -> Path:
    """Write the message atomically as `<time>-<job id>-<event>-<n>.json`; readers never see a partial file. Its
    owner's alone: it holds key-less links to the job's files."""
    final = outbox / f"{_stamp()}-{message['job_id']}-{message['event']}-{uuid.uuid4().hex[:6]}.json"
    atomic.write_json(final, message, private=True)
    return final


class LocalNotifier:
    """Notifier for `af2 serve`: outbox always; e-mail when smtp_host is set, to the job owner's addresses (the
    e-mail on their keys) and to `to` (the operator, every job); webhook when its URL is."""

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
        owner_addresses: Callable[[str], list[str]] | None = None,
        links: LinkSigner | None = None,
    ) -> None:
        self.outbox_dir = Path(outbox_dir)
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.smtp_from = smtp_from
        self.to = to
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise errors.ConfigurationError(f"AF2_WEBHOOK_URL must be an http(s) URL, not {webhook_url!r}")
        self.webhook_url = webhook_url
        self.store = store  # to read results and give links; without it the message carries store keys only
        self.timeout_s = timeout_s
        self.owner_addresses = owner_addresses  # the job owner's addresses (their keys' e-mail), mailed as well
        # With a signer, links go through the server (GET /jobs/{id}/link, a week); without, they are file paths.
        self.links = links

    def notify(self, job: Job, event: JobEvent) -> None:
        message = notification.build(job, event, self.store, signer=self.links)  # file links do not expire
        self._deliver("outbox", job, lambda: write_outbox(self.outbox_dir, message.data))
        if self.smtp_host:
            for address in self._recipients(job):
                self._deliver(f"e-mail to {address}", job, lambda a=address: self._send_email(message, a))
        if self.webhook_url:
            self._deliver("webhook", job, lambda: self._post_webhook(message.data))

    def _deliver(self, channel: str, job: Job, send) -> None:
        try:
            send()
        except Exception:
            log.exception("job %s: %s notification failed", job.id, channel, extra={"job_id": job.id})

    def _recipients(self, job: Job) -> list[str]:
        """The owner's addresses, then the operator's (AF2_NOTIFY_EMAIL, every job's mail), each once."""
        owners: list[str] = []
        if self.owner_addresses is not None:
            try:
                owners = self.owner_addresses(job.owner)
            except Exception:
                log.exception("job %s: the owner's e-mail addresses could not be read", job.id,
                              extra={"job_id": job.id})
        return list(dict.fromkeys([*owners, *([self.to] if self.to else [])]))

    def _send_email(self, message: notification.Notification, to: str) -> None:
        mail = EmailMessage()  # one mail per address: no recipient sees another's address
        mail["Subject"] = message.subject
        mail["From"] = self.smtp_from
        mail["To"] = to
        mail.set_content(message.text)
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_s) as smtp:
            smtp.send_message(mail)

    def _post_webhook(self, data: dict[str, Any]) -> None:
        response = httpx.post(self.webhook_url, json=data, headers={"User-Agent": "af2jobs"}, timeout=self.timeout_s)
        response.raise_for_status()  # a non-2xx answer is a failed delivery, which _deliver logs
