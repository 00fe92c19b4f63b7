"""In-memory recording fakes of the Orchestrator and Notifier ports, shared by the service and API tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from af2jobs.models import Job, JobEvent


@dataclass
class RecordingOrchestrator:
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    fail_start: bool = False

    def start(self, job: Job) -> None:
        if self.fail_start:
            raise RuntimeError("no capacity")
        self.started.append(job.id)

    def cancel(self, job: Job) -> None:
        self.cancelled.append(job.id)


@dataclass
class RecordingNotifier:
    events: list[tuple[str, JobEvent]] = field(default_factory=list)
    broken: bool = False

    def notify(self, job: Job, event: JobEvent) -> None:
        if self.broken:
            raise ConnectionError("mail server down")
        self.events.append((job.id, event))
