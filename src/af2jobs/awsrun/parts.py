"""What the state machine's tasks are given (TaskParts: the job records, the store, the notifier, the MSA cache's
index, the failed Batch jobs' own reports, metrics) and how aws_parts builds it on AWS. Tests pass their own."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from af2jobs import lifecycle
from af2jobs.awsrun.errors import job_id_of, race_lost_as_step_error, refuse_cancelled
from af2jobs.models import Job
from af2jobs.ports import ArtifactStore, JobRepository, Notifier
from af2jobs.settings import Settings

log = logging.getLogger(__name__)


class MsaCacheIndex(Protocol):
    def manifest(self) -> list[dict[str, Any]] | None: ...

    def has(self, key: str) -> bool: ...


class FailureReports(Protocol):
    def failure(self, job_id: str, batch_job_id: str) -> dict[str, Any] | None: ...


class Metrics(Protocol):
    def put(self, name: str, value: float, **dimensions: str) -> None: ...


class NoMetrics:
    def put(self, name: str, value: float, **dimensions: str) -> None:
        pass


@dataclass(frozen=True)
class TaskParts:
    settings: Settings
    repo: JobRepository
    store: ArtifactStore
    notifier: Notifier
    msa_cache: MsaCacheIndex
    failures: FailureReports
    metrics: Metrics = field(default_factory=NoMetrics)

    def metric(self, name: str, value: float, **dimensions: str) -> None:
        # A metric that cannot be written is logged: the job's record, not the dashboard, is what must be right.
        try:
            self.metrics.put(name, value, **dimensions)
        except Exception:
            log.exception("metric %s not published", name)

    def job(self, event: Mapping[str, Any]) -> Job:
        """The job the task's input names; JobCancelled for one being cancelled or cancelled."""
        job = self.repo.get(job_id_of(event))
        refuse_cancelled(job)
        return job

    def move(self, job_id: str, move: Callable[..., Job], *args: Any, **kwargs: Any) -> Job:
        """A lifecycle move (`move(repo, job_id, *args, **kwargs)`), counted in the JobsEntered metric; a lost
        race raises the state machine's named error."""
        with race_lost_as_step_error(self.repo, job_id):
            job = move(self.repo, job_id, *args, **kwargs)
        self.metric("JobsEntered", 1, State=job.state.value)
        return job

    def progress(self, job_id: str, **kwargs: Any) -> Job:
        """lifecycle.report_progress while the job is where the task expects it."""
        with race_lost_as_step_error(self.repo, job_id):
            return lifecycle.report_progress(self.repo, job_id, **kwargs)


def aws_parts(settings: Settings) -> TaskParts:
    """The parts on AWS: wiring.build's repository, store and notifier, and the S3 cache and work area."""
    from af2jobs import wiring
    from af2jobs.adapters.aws.cloudwatch import EmfMetrics
    from af2jobs.adapters.aws.workarea import S3MsaCache, S3Objects, S3WorkArea

    services = wiring.build(settings)
    objects = S3Objects(settings.bucket)
    return TaskParts(settings, services.repo, services.store, services.notifier, S3MsaCache(objects),
                     S3WorkArea(objects), EmfMetrics())


def log_keys(event: Mapping[str, Any]) -> dict[str, str]:
    """The keys every log line of a task carries (Powertools Logger.append_keys)."""
    return {name: str(event[name]) for name in ("job_id", "execution") if event.get(name)}


__all__ = ["FailureReports", "Metrics", "MsaCacheIndex", "NoMetrics", "TaskParts", "aws_parts", "log_keys"]
