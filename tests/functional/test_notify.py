"""LocalNotifier: the outbox file, a real e-mail through a local SMTP server (aiosmtpd), a real webhook POST, and
deliveries that fail without failing the caller."""

from __future__ import annotations

import json
import logging
import socket
import threading
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from af2jobs import errors
from af2jobs.adapters.local.files import DirectoryArtifactStore
from af2jobs.adapters.local.notify import LocalNotifier
from af2jobs.models import Job, JobError, JobEvent, JobState, Phase
from af2jobs.request import JobRequest
from af2jobs.notification import UNTRAINED_LINE
from tests.conftest import UBIQUITIN

REQUEST = JobRequest(fasta="ubq", sequence=UBIQUITIN, comment="for the paper")


def _phases(*states: str) -> dict[str, Phase]:
    # One second per phase, in order.
    return {s: Phase(started_at=f"2026-01-01T00:00:0{i}+00:00", ended_at=f"2026-01-01T00:00:0{i + 1}+00:00")
            for i, s in enumerate(states)}


@pytest.fixture
def store(tmp_path) -> DirectoryArtifactStore:
    return DirectoryArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def succeeded(store) -> Job:
    job = Job(owner="ann", request=REQUEST, state=JobState.SUCCEEDED,
              phases=_phases("QUEUED", "VALIDATING", "MSA", "PREDICTING", "SUCCEEDED"))
    prefix = f"jobs/{job.id}/output"
    summary = {"records": [{"name": "ubq", "dir": "ubq", "best_model": "model_3", "mean_plddt": 71.25, "ptm": 0.6125,
                            "untrained": True}]}
    store.put_bytes(f"{prefix}/predictions.json", json.dumps(summary).encode())
    store.put_bytes(f"{prefix}/ubq/ranked_0.pdb", b"REMARK\n")
    store.put_bytes(f"{prefix}/ubq/timings.json", b"{}")
    job.artifacts = {"predictions.json": f"{prefix}/predictions.json", "ubq/ranked_0.pdb": f"{prefix}/ubq/ranked_0.pdb",
                     "ubq/timings.json": f"{prefix}/ubq/timings.json"}
    return job


@pytest.fixture
def failed() -> Job:
    return Job(owner="ann", request=REQUEST, state=JobState.FAILED, phases=_phases("QUEUED", "VALIDATING", "MSA"),
               error=JobError(type="StageError", message="msa: no sequence database is configured", stage="msa"))


def outbox_messages(outbox: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(outbox.iterdir())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_event_is_one_outbox_file_with_the_results(tmp_path, store, succeeded):
    notifier = LocalNotifier(tmp_path / "outbox", store=store)
    notifier.notify(succeeded, JobEvent.SUBMITTED)
    notifier.notify(succeeded, JobEvent.SUCCEEDED)

    submitted, done = outbox_messages(tmp_path / "outbox")
    assert submitted["event"] == "submitted" and done["event"] == "succeeded"
    assert done["job_name"] == "ubq" and done["state"] == "SUCCEEDED" and done["comment"] == "for the paper"
    assert done["records"] == [{"name": "ubq", "dir": "ubq", "best_model": "model_3", "mean_plddt": 71.25,
                                "ptm": 0.6125, "untrained": True}]
    assert done["untrained_note"] == UNTRAINED_LINE
    assert done["download"] == f"af2 download {succeeded.id} DIR"
    assert done["artifacts"]["ubq/ranked_0.pdb"] == store.url(succeeded.artifacts["ubq/ranked_0.pdb"])
    # Phases in the order they happened, the terminal state left out.
    assert list(done["phase_seconds"].items()) == [("QUEUED", 1.0), ("VALIDATING", 1.0), ("MSA", 1.0),
                                                   ("PREDICTING", 1.0)]
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "outbox").iterdir())


def test_a_failure_names_its_error_and_stage(tmp_path, failed):
    LocalNotifier(tmp_path / "outbox").notify(failed, JobEvent.FAILED)

    [message] = outbox_messages(tmp_path / "outbox")
    assert message["error"] == {"type": "StageError", "message": "msa: no sequence database is configured",
                                "stage": "msa"}
    assert message["records"] == [] and message["untrained_note"] is None


class _Inbox:
    """An aiosmtpd handler keeping what it receives."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def test_an_email_goes_out_through_smtp(tmp_path, store, succeeded, failed):
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    inbox = _Inbox()
    port = free_port()
    controller = controller_mod.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        notifier = LocalNotifier(tmp_path / "outbox", smtp_host="127.0.0.1", smtp_port=port,
                                 smtp_from="af2@example.org", to="ann@example.org", store=store)
        notifier.notify(succeeded, JobEvent.SUCCEEDED)
        notifier.notify(failed, JobEvent.FAILED)
    finally:
        controller.stop()

    (to, ok), (_, bad) = inbox.mails
    assert to == ["ann@example.org"] and ok["From"] == "af2@example.org"
    assert ok["Subject"] == "af2jobs ubq SUCCEEDED"
    body = ok.get_payload(decode=True).decode()
    assert "ubq: best model model_3, mean pLDDT 71.25, pTM 0.613" in body
    assert UNTRAINED_LINE in body and f"af2 download {succeeded.id} DIR" in body
    assert "ubq/ranked_0.pdb: file://" in body and "... and 1 more" in body
    assert "Error in stage msa: StageError: msa: no sequence database is configured" in bad.get_payload(decode=True).decode()


def test_the_owners_addresses_get_their_own_mail_and_the_operator_a_copy(tmp_path, store, succeeded):
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    inbox = _Inbox()
    port = free_port()
    controller = controller_mod.Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    addresses = {"ann": ["ann@lab.example.org", "ops@example.org"]}
    try:
        notifier = LocalNotifier(tmp_path / "outbox", smtp_host="127.0.0.1", smtp_port=port, to="ops@example.org",
                                 store=store, owner_addresses=lambda owner: addresses.get(owner, []))
        notifier.notify(succeeded, JobEvent.SUCCEEDED)  # ann's job
        addresses.clear()
        notifier.notify(succeeded, JobEvent.SUCCEEDED)  # her key has no address any more: the operator only
    finally:
        controller.stop()
    # One mail per address (no one sees another's), each address once.
    assert [(to, mail["To"]) for to, mail in inbox.mails] == [
        (["ann@lab.example.org"], "ann@lab.example.org"), (["ops@example.org"], "ops@example.org"),
        (["ops@example.org"], "ops@example.org")]


def test_owner_addresses_that_cannot_be_read_still_leave_the_outbox_and_the_operator(tmp_path, succeeded, caplog):
    def broken(owner):
        raise OSError("the key database is locked")

    notifier = LocalNotifier(tmp_path / "outbox", smtp_host="127.0.0.1", smtp_port=free_port(), to="ops@example.org",
                             owner_addresses=broken, timeout_s=1)
    notifier.notify(succeeded, JobEvent.SUCCEEDED)
    assert len(outbox_messages(tmp_path / "outbox")) == 1
    assert "e-mail addresses could not be read" in caplog.text and "e-mail to ops@example.org" in caplog.text


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []
    status = 204

    def do_POST(self):  # noqa: N802 (http.server's hook name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received, _Hook.status = [], 204
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook
    server.shutdown()
    server.server_close()


def test_the_webhook_receives_the_message_as_json(tmp_path, store, succeeded, webhook):
    url, hook = webhook
    LocalNotifier(tmp_path / "outbox", webhook_url=url, store=store).notify(succeeded, JobEvent.SUCCEEDED)

    [(content_type, message)] = hook.received
    assert content_type == "application/json"
    assert message == outbox_messages(tmp_path / "outbox")[0]


def test_failed_deliveries_are_logged_and_never_raised(tmp_path, succeeded, webhook, caplog):
    url, hook = webhook
    hook.status = 500
    notifier = LocalNotifier(tmp_path / "outbox", smtp_host="127.0.0.1", smtp_port=free_port(), to="ann@example.org",
                             webhook_url=url, timeout_s=2)
    with caplog.at_level(logging.ERROR, logger="af2jobs.adapters.local.notify"):
        notifier.notify(succeeded, JobEvent.SUCCEEDED)

    assert len(outbox_messages(tmp_path / "outbox")) == 1  # the record is kept whatever the deliveries did
    failures = [r.getMessage() for r in caplog.records]
    assert failures == [f"job {succeeded.id}: e-mail to ann@example.org notification failed",
                        f"job {succeeded.id}: webhook notification failed"]


def test_a_webhook_must_be_http(tmp_path):
    with pytest.raises(errors.ConfigurationError, match="AF2_WEBHOOK_URL"):
        LocalNotifier(tmp_path / "outbox", webhook_url="file:///etc/passwd")


def test_the_text_carries_the_cost_and_links_the_report(store, succeeded):
    from af2jobs.cost import job_cost
    from af2jobs.notification import build

    prefix = f"jobs/{succeeded.id}/output"
    store.put_bytes(f"{prefix}/ubq/report.html", b"<!DOCTYPE html>")
    succeeded.artifacts["ubq/report.html"] = f"{prefix}/ubq/report.html"
    succeeded.cost = {"msa_s": 1800.0, "predict_s": 600.0,
                      "usd": job_cost({"msa_s": 1800.0, "predict_s": 600.0}, queue="low")}
    message = build(succeeded, JobEvent.SUCCEEDED, store)
    assert message.data["measured_seconds"] == {"msa_s": 1800.0, "predict_s": 600.0}
    text = message.text
    usd = succeeded.cost["usd"]
    assert f"Cost: ${usd['total_usd']:.4f}" in text and "g5.2xlarge" in text and usd["prices_as_of"] in text
    assert f"ubq/report.html: {store.url(succeeded.artifacts['ubq/report.html'])}" in text
