"""What af2jobs says about a job event, to people and to programs: one message, built here from the job record and
its published results. The notifiers only deliver it (adapters/local/notify.py: outbox file, e-mail, webhook;
adapters/aws/sns.py: SNS).

    subject     "af2jobs <job name> <STATE>", under 100 characters (SNS's limit; the name gives way)
    text        the e-mail body: state, owner, comment, phases, cost, error, each record's best model, UNTRAINED,
                download links and the command that downloads everything
    data        the JSON document (the outbox file, the webhook's body, SNS's sqs/lambda/http subscribers):
                event_fields() plus measured_seconds, records, untrained(_note), artifacts (every file: a link),
                links (the files worth a line in the text), links_expire_at, download
    attributes  state, owner, event: what an SNS subscription filters on

Results (records, links, UNTRAINED) are read only for a SUCCEEDED job: from jobs/<id>/output/predictions.json and
the records' versions.json. A missing or unreadable summary makes a shorter message, never a lost one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from af2jobs import errors, layout
from af2jobs.links import LinkSigner
from af2jobs.models import Job, JobEvent, JobState
from af2jobs.ports import ArtifactStore

log = logging.getLogger(__name__)

MAX_SUBJECT = 99  # SNS allows "less than 100 characters"
MAX_LINKS = 10
# The files worth a line (and a link) in the text: the best structure of each record in both formats, its report,
# the run's summary and the job's log. The JSON's `artifacts` links every file.
LINKED_FILES = ("report.html", "ranked_0.pdb", "ranked_0.cif", layout.PREDICTIONS, layout.LOG_NAME)
RECORD_FIELDS = ("name", "dir", "best_model", "mean_plddt", "ptm", "untrained")
UNTRAINED_LINE = (
    "UNTRAINED: these structures were predicted with untrained (random) parameters; they and their scores carry "
    "no biological meaning."
)


@dataclass(frozen=True)
class Notification:
    subject: str
    text: str
    data: dict[str, Any]
    attributes: dict[str, str]


@dataclass(frozen=True)
class Results:
    """What a finished job's summaries say: the best model per record, whether the parameters were UNTRAINED."""

    records: list[dict[str, Any]] = field(default_factory=list)
    untrained: bool = False
    link_names: list[str] = field(default_factory=list)  # artifact names, relative to jobs/<id>/output/


# ---------------------------------------------------------------------------------------------------------------
# Facts of the job


def _seconds_between(start: str, end: str) -> float:
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def phase_seconds(job: Job) -> dict[str, float]:
    """Wall-clock seconds of each phase that has ended, from the job record's phase times (waiting included);
    a terminal state is not a phase and is left out."""
    ended = [(state, p) for state, p in job.phases.items() if p.ended_at is not None and state != job.state.value]
    ended.sort(key=lambda item: item[1].started_at)  # in the order they happened
    return {state: _seconds_between(p.started_at, p.ended_at) for state, p in ended}


def event_fields(job: Job, event: JobEvent) -> dict[str, Any]:
    """What every notification says of the job and the event."""
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


def _read_json(store: ArtifactStore, key: str) -> Any:
    try:
        return json.loads(store.get_bytes(key))
    except (errors.Af2JobsError, ValueError):
        return None


def read_results(job: Job, store: ArtifactStore) -> Results:
    """The published summaries of the job (see the module docstring)."""
    prefix = layout.output_prefix(job.id)
    keys = store.list(prefix)
    summary = _read_json(store, layout.predictions_key(job.id))
    if summary is None:
        log.warning("job %s: no readable %s", job.id, layout.PREDICTIONS, extra={"job_id": job.id})
    raw = summary.get("records", []) if isinstance(summary, dict) else []
    records = [{k: r.get(k) for k in RECORD_FIELDS} for r in raw if isinstance(r, dict)]
    untrained = any(r["untrained"] for r in records) or any(
        (_read_json(store, k) or {}).get("params_status") == "UNTRAINED" for k in keys if k.endswith("/versions.json")
    )
    linked = [k.removeprefix(prefix) for k in keys if k.rsplit("/", 1)[-1] in LINKED_FILES]
    return Results(records=records, untrained=untrained, link_names=linked)


# ---------------------------------------------------------------------------------------------------------------
# The message


def _duration(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def subject(job: Job) -> str:
    room = MAX_SUBJECT - len(f"af2jobs  {job.state.value}")  # the state always fits; a long job name gives way
    return f"af2jobs {job.request.fasta[:room]} {job.state.value}"


def _cost_line(usd: Any) -> str | None:
    if not isinstance(usd, dict) or "total_usd" not in usd:
        return None
    return (f"Cost: ${usd['total_usd']:.4f} (CPU ${usd['cpu_usd']:.4f} on {usd.get('cpu_instance', '?')}, GPU "
            f"${usd['gpu_usd']:.4f} on {usd.get('gpu_instance', '?')}; {usd.get('region', '')} list prices of "
            f"{usd.get('prices_as_of', '?')})")


def render_text(data: dict[str, Any], links_until: str | None, more: int) -> str:
    """The plain-text body for the JSON document `data` (see the module docstring)."""
    lines = [f"Job {data['job_name']} ({data['job_id']}) is {data['state']} ({data['event']}).",
             f"Owner: {data['owner']}"]
    if data["comment"]:
        lines.append(f"Comment: {data['comment']}")
    if data["phase_seconds"]:
        lines.append("Phases: " + ", ".join(f"{p} {_duration(s)}" for p, s in data["phase_seconds"].items()))
    cost = _cost_line(data["cost_usd"])
    if cost:
        lines.append(cost)
    error = data["error"]
    if error is not None:
        stage = f" in stage {error['stage']}" if error.get("stage") else ""
        lines.append(f"Error{stage}: {error['type']}: {error['message']}")
    lines += [f"{r['name']}: best model {r['best_model']}, mean pLDDT {_fmt(r['mean_plddt'], 2)}, "
              f"pTM {_fmt(r['ptm'], 3)}" for r in data["records"]]
    if data["untrained_note"]:
        lines.append(data["untrained_note"])
    if data["links"]:
        lines.append(f"Download links (valid until {links_until}):" if links_until else "Download links:")
        lines += [f"  {link['name']}: {link['url']}" for link in data["links"]]
        if more:
            lines.append(f"  ... and {more} more")
    if data["state"] in (JobState.SUCCEEDED.value, JobState.FAILED.value):
        lines.append(f"Download all files: {data['download']}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Linker:
    """Where every link of one message comes from: `url(key)` for a store key, and until when all of them work
    (Unix time; None: they do not expire). One expiry for the whole message, fixed when it is built."""

    url: Callable[[str], str]
    expires: int | None


def linker(job: Job, store: ArtifactStore | None, *, link_seconds: int | None = None,
           signer: LinkSigner | None = None) -> Linker:
    """Links through the API (a `signer`: af2jobs.links, for its seconds), else the store's own URLs (for
    `link_seconds`, None for links that do not expire), else (no store) the keys themselves."""
    if signer is not None:
        expires, prefix = signer.expiry(), layout.job_prefix(job.id)
        return Linker(lambda key: signer.url(job.id, key.removeprefix(prefix), expires), expires)
    if store is None:
        return Linker(lambda key: key, None)

    def presigned(key: str) -> str:
        try:
            return store.url(key, link_seconds) if link_seconds else store.url(key)
        except errors.Af2JobsError:
            return key  # a file gone since: the key still says what it was

    return Linker(presigned, int(time.time()) + link_seconds if link_seconds else None)


def build(job: Job, event: JobEvent, store: ArtifactStore | None = None, *,
          link_seconds: int | None = None, signer: LinkSigner | None = None) -> Notification:
    """The message for one event. `store` gives the results and the links (without it the message carries store
    keys only); `link_seconds` is how long the store's links work, None for links that do not expire. With a
    `signer` the links go through the API instead (af2jobs.links) and work for the signer's seconds."""
    link = linker(job, store, link_seconds=link_seconds, signer=signer)
    succeeded = job.state is JobState.SUCCEEDED
    results = read_results(job, store) if store is not None and succeeded else Results()
    files = {name: key for name, key in sorted(job.artifacts.items())
             if not layout.is_reference(name) and not layout.withheld(job.id, key, succeeded=succeeded)}
    linked = {name: layout.output_key(job.id, name) for name in results.link_names}
    if succeeded:
        linked.update({name: key for name, key in files.items() if name.rsplit("/", 1)[-1] in LINKED_FILES})
    links = [{"name": name, "key": key, "url": link.url(key)} for name, key in list(linked.items())[:MAX_LINKS]]
    until = datetime.fromtimestamp(link.expires, timezone.utc) if link.expires is not None and (files or links) else None
    data = {
        **event_fields(job, event),
        "measured_seconds": {k: v for k, v in (job.cost or {}).items() if k != "usd"},
        "records": results.records,
        "untrained": results.untrained,
        "untrained_note": UNTRAINED_LINE if results.untrained else None,
        "artifacts": {name: link.url(key) for name, key in files.items()},
        "links": links,
        "links_expire_at": until.isoformat(timespec="seconds") if until else None,
        "download": f"af2 download {job.id} DIR",
    }
    linked_keys = {item["key"] for item in links}
    more = sum(1 for key in files.values() if key not in linked_keys)
    text = render_text(data, until.strftime("%Y-%m-%d %H:%M UTC") if until else None, more)
    return Notification(subject=subject(job), text=text, data=data,
                        attributes={"state": job.state.value, "owner": job.owner, "event": event.value})


__all__ = ["LINKED_FILES", "MAX_SUBJECT", "Linker", "Notification", "Results", "UNTRAINED_LINE", "build", "event_fields", "linker",
           "phase_seconds", "read_results", "render_text", "subject"]
