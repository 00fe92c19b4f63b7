"""One job's pass through one of the local Worker's pools: the MSA phase (QUEUED -> VALIDATING -> MSA) or the
predict phase (MSA -> PREDICTING -> SUCCEEDED, the results published), and what ends either one when it raises
(CANCELLED, left for the next start at a shutdown, or FAILED). The state changes are af2jobs.lifecycle's."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from af2jobs import cost, errors, jobrun, lifecycle
from af2jobs.fasta import FastaRecord
from af2jobs.models import UNFINISHED, Job, JobError, JobEvent, JobState, Progress
from af2jobs.ports import ArtifactStore, JobRepository
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

S = JobState


class Host(Protocol):
    """What a pass asks of the Worker that runs it (adapters/local/worker.py)."""

    repo: JobRepository
    store: ArtifactStore
    settings: Settings
    stages: jobrun.StageRunner

    @property
    def stopping(self) -> bool: ...
    def workdir(self, job_id: str, slug: str) -> Path: ...
    def check_memory(self, job: Job, records: list, depths: dict[str, int] | None = None) -> None: ...
    def log(self, job_id: str, message: str) -> None: ...
    def notify(self, job: Job, event: JobEvent) -> None: ...
    def clear_work(self, job_id: str) -> None: ...
    def clear_output(self, job_id: str) -> None: ...
    def finish_cancel(self, job_id: str) -> Job | None: ...


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


class JobPass:
    def __init__(self, worker: Host, job_id: str, cancel: threading.Event) -> None:
        self.worker = worker
        self.repo = worker.repo
        self.job_id = job_id
        self.cancel = cancel
        self.records: list[FastaRecord] = []
        self.prepared: jobrun.Prepared | None = None
        self.progress = lifecycle.StageProgress(self.repo, job_id, 0, lambda line: worker.log(job_id, line),
                                                stage="validating")

    def should_cancel(self) -> bool:
        return self.cancel.is_set() or self.worker.stopping

    def workdir(self, record: FastaRecord) -> Path:
        return self.worker.workdir(self.job_id, record.slug)

    # -- the CPU side: VALIDATING and MSA --------------------------------------------------------------------

    def msa_phase(self, resume: bool) -> bool:
        """True when the job's MSA is done and it waits for a GPU slot."""
        job = self.repo.get(self.job_id)
        if job.state is S.QUEUED and not resume:
            job = lifecycle.begin_validation(self.repo, self.job_id, "reading the input")
        elif not (resume and job.state in (S.VALIDATING, S.MSA)):
            return False  # cancelled or finished since it was queued
        t0 = time.perf_counter()
        self._prepare(job)
        self.worker.check_memory(job, self.records)  # a record this machine cannot predict fails before its MSA
        if job.state is S.VALIDATING:
            lifecycle.begin_msa(self.repo, self.job_id, "starting the MSA", cost={"validating_s": _since(t0)})
        t0 = time.perf_counter()
        for index, record in enumerate(self.records, 1):
            self.progress.at(index, record.name)
            if jobrun.run_msa_record(self.worker.stages, record, self.workdir(record), self.prepared) is None:
                self.worker.log(self.job_id, f"{record.name}: MSA finished before a restart; kept")
        self._check_cancel()
        n = len(self.records)
        waiting = Progress(stage="waiting", step=n, total=n, message="MSA done; waiting for a GPU slot")
        lifecycle.report_progress(self.repo, self.job_id, waiting, expected={S.MSA}, cost={"msa_s": _since(t0)})
        return True

    def _prepare(self, job: Job) -> None:
        """Read and check the job's input and run configuration, and make its stages ready."""
        self.records = jobrun.read_records(self.worker.store, job, self.worker.settings.max_length)
        self.progress.total = len(self.records)
        self.prepared = jobrun.prepare(self.worker.stages, self.worker.store, job, self.records,
                                       progress=self.progress, should_cancel=self.should_cancel)
        self.worker.log(self.job_id, f"{len(self.records)} record(s); run config "
                                     f"{self.prepared.run_config.model_dump_json()}")

    # -- the GPU side: PREDICTING, publishing, SUCCEEDED -----------------------------------------------------

    def may_predict(self, resume: bool) -> Job | None:
        """The job, when its predict phase is to run (MSA done, or PREDICTING when resumed); None when it moved on
        since it was queued (one cancelled while it waited for a slot ends CANCELLED here)."""
        job = self.repo.get(self.job_id)
        if job.state is (S.PREDICTING if resume else S.MSA):
            return job
        if job.state is S.CANCELLING:
            self.handle_error(errors.CancelledError("cancelled while waiting for a GPU slot"))
        return None

    def predict_phase(self, resume: bool) -> None:
        job = self.may_predict(resume)
        if job is None:
            return
        if job.state is S.MSA:
            job = lifecycle.begin_predict(self.repo, self.job_id, "starting the prediction")
        self._prepare(job)
        t0 = time.perf_counter()
        summaries = jobrun.run_predict_records(self.worker.stages, self.records, self.workdir, self.prepared,
                                               lambda index, record: self.progress.at(index, record.name))
        predict_s, t0 = _since(t0), time.perf_counter()
        artifacts = self._publish(summaries)
        phases = {"predict_s": predict_s, "publish_s": _since(t0)}
        queue = job.request.queue_for(max(len(r.sequence) for r in self.records))
        usd = cost.job_cost({**(job.cost or {}), **phases}, queue=queue, gpus=job.request.gpu)
        done = lifecycle.succeed(self.repo, self.job_id, summaries, cost={**phases, "usd": usd}, artifacts=artifacts)
        self.worker.log(self.job_id, f"SUCCEEDED: {done.progress.message}")
        self.worker.clear_work(self.job_id)  # published; the copies would only take space
        self.worker.notify(done, JobEvent.SUCCEEDED)

    def _publish(self, summaries: list[dict[str, Any]]) -> dict[str, str]:
        """Copy each record's results to jobs/<id>/output/<slug>/ and write predictions.json; their keys."""
        self.progress.stage = "outputs"
        try:
            return jobrun.publish(self.worker.store, self.job_id, self.records, self.workdir, summaries)
        except BaseException:
            # Part of the results would pass for all of them (GET /jobs/<id>/files lists them): none, or all.
            self.worker.clear_output(self.job_id)
            raise

    # -- cancel and errors -----------------------------------------------------------------------------------

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise errors.CancelledError(f"the job was cancelled during {self.progress.stage}")

    def handle_error(self, exc: Exception) -> None:
        """Any exception of the pass ends here: cancelled, left for recover() (at shutdown), or FAILED."""
        state = self.repo.get(self.job_id).state
        if state is S.CANCELLING or (isinstance(exc, errors.CancelledError) and self.cancel.is_set()):
            self._cancelled()
        elif state not in UNFINISHED:
            self.worker.log(self.job_id, f"stopped: the job is already {state.value}")
        elif isinstance(exc, errors.CancelledError) and self.worker.stopping:
            self.worker.log(self.job_id, f"stopped by a shutdown during {self.progress.stage}; left {state.value} "
                                         "for the next start")
        else:
            self._fail(exc)

    def _cancelled(self) -> None:
        cancelled = self.worker.finish_cancel(self.job_id)
        if cancelled is not None:
            self.worker.notify(cancelled, JobEvent.CANCELLED)

    def _fail(self, exc: Exception) -> None:
        message = exc.message if isinstance(exc, errors.Af2JobsError) else (str(exc) or repr(exc))
        stage = getattr(exc, "stage", None) or self.progress.stage
        error = JobError(type=type(exc).__name__, message=message, stage=stage)
        log.error("job %s failed in %s", self.job_id, error.stage, exc_info=exc, extra={"job_id": self.job_id})
        try:
            failed = lifecycle.fail(self.repo, self.job_id, error)
        except errors.ConflictError:
            self._cancelled()  # cancelled while the error was being handled: that state change wins
            return
        self.worker.clear_work(self.job_id)
        self.worker.log(self.job_id, f"FAILED in {error.stage}: {error.type}: {error.message}")
        self.worker.notify(failed, JobEvent.FAILED)
