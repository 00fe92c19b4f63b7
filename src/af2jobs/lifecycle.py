"""Every move of a job between states, one named function each. The service, the local Worker, the Step Functions
tasks and the Batch stages call these, and nothing else moves a job: models.TRANSITIONS says which moves the
repository allows, this module makes each one with what the record says about it.

    begin_validation   QUEUED -> VALIDATING                    the job's log joins its artifacts
    begin_msa          VALIDATING -> MSA
    begin_predict      MSA -> PREDICTING
    succeed            PREDICTING -> SUCCEEDED                 the results' best models as the last progress line,
                                                               the cost, the published files
    fail               QUEUED | VALIDATING | MSA | PREDICTING -> FAILED    the error, and a progress line naming it
    interrupted        fail, for a job a restart cut short (error type "Interrupted")
    request_cancel     VALIDATING | MSA | PREDICTING -> CANCELLING         its compute is to be stopped
    finish_cancel      QUEUED | CANCELLING -> CANCELLED                    no compute runs for it (any more)
    report_progress    a running job's progress line (no state change); StageProgress makes the lines of a stage

Each move is one conditional write: a lost race raises ConflictError (and a missing job NotFoundError), and the
caller decides whether the other actor's move wins.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from af2jobs import layout
from af2jobs.models import RUNNING, Job, JobError, JobState, Progress
from af2jobs.ports import JobRepository

S = JobState
# The states a job can fail from (CANCELLING ends CANCELLED: its cancel wins over a late failure).
FAILABLE: frozenset[JobState] = frozenset({S.QUEUED}) | RUNNING
# The states a cancel finishes from: no compute runs for the job (any more).
CANCELLABLE: frozenset[JobState] = frozenset({S.QUEUED, S.CANCELLING})
INTERRUPTED = "interrupted by a restart"
MAX_PROGRESS = 500


def begin_validation(repo: JobRepository, job_id: str, message: str) -> Job:
    return repo.transition(job_id, {S.QUEUED}, S.VALIDATING, artifacts={layout.LOG_NAME: layout.log_key(job_id)},
                           progress=Progress(stage="validating", message=message))


def begin_msa(repo: JobRepository, job_id: str, message: str, *, cost: Mapping[str, Any] | None = None) -> Job:
    return repo.transition(job_id, {S.VALIDATING}, S.MSA, progress=Progress(stage="msa", message=message),
                           **({"cost": dict(cost)} if cost else {}))


def begin_predict(repo: JobRepository, job_id: str, message: str) -> Job:
    return repo.transition(job_id, {S.MSA}, S.PREDICTING, progress=Progress(stage="predict", message=message))


def best_line(summaries: Iterable[Mapping[str, Any]]) -> str:
    """The records' best models in one line (a succeeded job's last progress message)."""
    parts = []
    for s in summaries:
        ptm = "" if s.get("ptm") is None else f", pTM {s['ptm']:.3f}"
        parts.append(f"{s['name']}: best {s['best_model']}, mean pLDDT {s['mean_plddt']:.1f}{ptm}")
    return "; ".join(parts)[:MAX_PROGRESS]


def succeed(repo: JobRepository, job_id: str, summaries: list[Mapping[str, Any]], *, cost: Mapping[str, Any],
            artifacts: Mapping[str, str] | None = None) -> Job:
    """PREDICTING -> SUCCEEDED once the results (the predictions.json entries `summaries`) are published."""
    n = len(summaries)
    done = Progress(stage="done", step=n, total=n, message=best_line(summaries))
    return repo.transition(job_id, {S.PREDICTING}, S.SUCCEEDED, progress=done, cost=dict(cost),
                           **({"artifacts": dict(artifacts)} if artifacts else {}))


def fail(repo: JobRepository, job_id: str, error: JobError, *,
         expected: Collection[JobState] = FAILABLE) -> Job:
    progress = Progress(stage="failed", message=f"{error.stage}: {error.type}: {error.message}"[:MAX_PROGRESS])
    return repo.transition(job_id, expected, S.FAILED, error=error, progress=progress)


def interrupted(repo: JobRepository, job: Job, why: str) -> Job:
    """FAILED: a restart cut the job short in its state, and it cannot go on (`why`)."""
    message = f"{INTERRUPTED} in {job.state.value}, and {why}"
    error = JobError(type="Interrupted", message=message, stage=job.state.value.lower())
    return fail(repo, job.id, error, expected={job.state})


def request_cancel(repo: JobRepository, job_id: str) -> Job:
    return repo.transition(job_id, RUNNING, S.CANCELLING)


def finish_cancel(repo: JobRepository, job_id: str, *, expected: Collection[JobState] = CANCELLABLE) -> Job:
    """CANCELLED: a job whose compute never started (QUEUED) or has stopped (CANCELLING)."""
    return repo.transition(job_id, expected, S.CANCELLED, progress=Progress(stage="cancelled", message="cancelled"))


def report_progress(repo: JobRepository, job_id: str, progress: Progress, *,
                    expected: Collection[JobState] | None = None, cost: Mapping[str, Any] | None = None) -> Job:
    """The job's progress line, with the cost entries of a phase that just ended (merged into the record's)."""
    return repo.update(job_id, expected_from=expected, progress=progress, **({"cost": dict(cost)} if cost else {}))


def describe(record: str, stage: str, event: str, details: Mapping[str, Any]) -> str:
    """One progress line: "<record>: <stage> <event> (k=v ...)" with the scalar details."""
    facts = " ".join(f"{k}={v}" for k, v in details.items() if isinstance(v, (str, int, float, bool)))
    return f"{record}: {stage} {event}" + (f" ({facts})" if facts else "")


class StageProgress:
    """The progress of a stage that works through a job's records, as the pipeline reports it (its Context's
    `progress` callback): each event becomes one line, on the job's record and in its log. `at` says which record
    is being worked on; `stage` is the pipeline stage last heard of (where a failure happened)."""

    def __init__(self, repo: JobRepository, job_id: str, total: int, log: Callable[[str], None], *,
                 expected: Collection[JobState] | None = None, stage: str = "") -> None:
        self.repo = repo
        self.job_id = job_id
        self.total = total
        self.log = log
        self.expected = expected
        self.stage = stage
        self.index = 0  # the record being worked on, 1-based
        self.record = ""

    def at(self, index: int, record: str) -> None:
        self.index, self.record = index, record

    def __call__(self, stage: str, event: str, details: Mapping[str, Any]) -> None:
        self.stage = stage
        # An event of a record finishing while the next is predicted names its own record.
        record = details.get("record", self.record)
        message = describe(record, stage, event, {k: v for k, v in details.items() if k != "record"})
        self.log(message)
        progress = Progress(stage=stage, step=self.index, total=self.total, message=message[:MAX_PROGRESS])
        report_progress(self.repo, self.job_id, progress, expected=self.expected)


__all__ = [
    "CANCELLABLE", "FAILABLE", "INTERRUPTED", "StageProgress", "begin_msa", "begin_predict", "begin_validation", "best_line",
    "describe", "fail", "finish_cancel", "interrupted", "report_progress", "request_cancel", "succeed",
]
