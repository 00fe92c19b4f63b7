"""One Batch stage of one job (`python -m af2jobs.awsrun.batch msa|predict`): af2jobs.jobrun's record-by-record
stages between S3 and a scratch folder on the container's disk.

    msa      (CPU queue)  the job's records through the MSA stage; each record's work dir (msas/, features.pkl) to
                          S3 jobs/<id>/work/<slug>/, its MSA to the shared MSA cache (af2jobs.awsrun.msacache)
    predict  (GPU queue)  each record's work dir back from S3 (or, after an MSA cache hit, its MSA from the cache
                          and its features computed here), the prediction, the results to jobs/<id>/output/

A stage reads the job from the JobRepository and its input from the ArtifactStore, records itself on the job
(artifacts["aws:batch:$AWS_BATCH_JOB_ID"] = stage, what a cancel terminates), reports progress on the job record
(af2jobs.lifecycle) and appends to jobs/<id>/log.txt. The state machine moves the job between states; a stage only
reads the state: it runs while the job is in its state (MSA, PREDICTING) and stops when it is not. Exit codes:
af2jobs.awsrun.contract.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from af2jobs import errors, jobrun, layout, lifecycle
from af2jobs.awsrun.contract import (
    EXIT_CANCELLED, EXIT_FAILED, EXIT_GPU_OUT_OF_MEMORY, EXIT_OK, GPU_OUT_OF_MEMORY, STAGE_STATES,
)
from af2jobs.awsrun.msacache import MsaCacheBridge, SharedMsaCache
from af2jobs.awsrun.parts import Metrics
from af2jobs.awsrun.usage import UsageReporter
from af2jobs.fasta import FastaRecord
from af2jobs.jobrun import StageRunner
from af2jobs.models import Job, JobState, Progress, utc_now
from af2jobs.ports import ArtifactStore, JobRepository
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

# How often a stage with no progress to report (a long search, a compile) re-reads its job's state, so that it
# stops even if the SIGTERM of TerminateJob never came (say the orchestrator could not terminate it).
RECORD_POLL_S = 15.0
# XLA reports a failed device allocation as this status at the head of the runtime error's text; JAX has no
# exception type of its own for it (JaxRuntimeError carries every XLA status).
XLA_OUT_OF_MEMORY = "RESOURCE_EXHAUSTED"


class WorkArea(Protocol):
    def save(self, job_id: str, slug: str, workdir: Path, last: str | None = None) -> list[str]: ...

    def restore(self, job_id: str, slug: str, workdir: Path) -> int: ...

    def record_failure(self, job_id: str, batch_job_id: str, report: dict[str, Any]) -> None: ...


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """Whether the exception, or one it was raised from, is XLA failing to allocate device memory."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False  # JAX never ran here: nothing it raised
    seen: BaseException | None = exc
    for _ in range(10):  # __context__ chains are short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, jax.errors.JaxRuntimeError) and str(seen).startswith(XLA_OUT_OF_MEMORY):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


class BatchStage:
    """The msa or predict stage of one job. `run()` returns the exit code."""

    def __init__(self, stage: str, job_id: str, *, settings: Settings, repo: JobRepository, store: ArtifactStore,
                 work: WorkArea, msa_cache: SharedMsaCache, stages: StageRunner, batch_job_id: str | None,
                 stop: threading.Event, metrics: Metrics | None = None) -> None:
        self.stage = stage
        self.state: JobState = STAGE_STATES[stage]
        self.job_id = job_id
        self.settings = settings
        self.repo = repo
        self.store = store
        self.work = work
        self.cache = MsaCacheBridge(settings, msa_cache, self._log)
        self.stages = stages
        self.batch_job_id = batch_job_id
        self.stop = stop
        self.metrics = metrics  # the container's CPU and memory go here while the stage runs (awsrun.usage)
        self._lines: list[str] = []
        self._checked = time.monotonic()
        self.job: Job | None = None
        self.records: list[FastaRecord] = []
        self.prepared: jobrun.Prepared | None = None
        self.progress = lifecycle.StageProgress(repo, job_id, 0, self._log, expected={self.state}, stage=stage)

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        t0 = time.perf_counter()
        usage = UsageReporter(self.stage, self.metrics).start() if self.metrics is not None else None
        try:
            # Scratch on the container's own disk: it goes with the container, however the stage ends.
            with tempfile.TemporaryDirectory(prefix=f"af2jobs-{self.stage}-") as scratch:
                self._begin()
                if self.stage == "msa":
                    self._msa(Path(scratch))
                else:
                    self._predict(Path(scratch))
            self._log(f"{self.stage} stage done in {_since(t0)} s")
            return EXIT_OK
        except Exception as exc:
            return self._failed(exc)
        finally:
            if usage is not None:
                usage.stop()
            self._flush_log()

    def _begin(self) -> None:
        from af2jobs.adapters.aws.stepfunctions import batch_job_artifact

        job = self.repo.get(self.job_id)
        if job.state in (JobState.CANCELLING, JobState.CANCELLED):
            raise errors.CancelledError(f"the job is {job.state.value}")
        if job.state is not self.state:
            raise errors.ConflictError(
                f"job {self.job_id} is {job.state.value}; the {self.stage} stage runs jobs in {self.state.value}"
            )
        artifacts = {layout.LOG_NAME: layout.log_key(self.job_id)}
        if self.batch_job_id:
            artifacts[batch_job_artifact(self.batch_job_id)] = self.stage
        self._guarded(self.repo.update, self.job_id, expected_from={self.state}, artifacts=artifacts)
        self.job = job
        self.records = jobrun.read_records(self.store, job, self.settings.max_length)
        self.progress.total = len(self.records)
        self.prepared = jobrun.prepare(self.stages, self.store, job, self.records, should_cancel=self._should_cancel,
                                       progress=lambda *event: self._guarded(self.progress, *event))
        self._log(f"{self.stage} stage of {len(self.records)} record(s), Batch job {self.batch_job_id}; "
                  f"run config {self.prepared.run_config.model_dump_json()}")

    # -- MSA -------------------------------------------------------------------------------------------------

    def _msa(self, scratch: Path) -> None:
        t0 = time.perf_counter()
        run = self.prepared.run_config
        for record in self.records:  # S3's entries first: the search ahead (msa_mode mmseqs2) leaves them out
            self.cache.fetch(record, self.prepared.databases, run.db_preset, run.msa_mode)
        for index, record in enumerate(self.records, 1):
            self.progress.at(index, record.name)
            workdir = scratch / record.slug
            if self._restore(record, workdir):
                self._log(f"{record.name}: MSA finished by an earlier attempt; kept")
                continue
            timings = jobrun.run_msa_record(self.stages, record, workdir, self.prepared)
            self.cache.share(timings, self.prepared.databases)
            self.work.save(self.job_id, record.slug, workdir, last=jobrun.MSA_DONE)
            self._check_stop()
        n = len(self.records)
        self._report(Progress(stage="msa", step=n, total=n, message="MSA done; waiting for a GPU"),
                     cost={"msa_s": _since(t0)})

    def _restore(self, record: FastaRecord, workdir: Path) -> bool:
        """The record's work dir from S3, if an MSA stage finished it; otherwise an empty place for one."""
        if self.work.restore(self.job_id, record.slug, workdir) and jobrun.msa_done(workdir):
            return True
        shutil.rmtree(workdir, ignore_errors=True)
        return False

    # -- predict ---------------------------------------------------------------------------------------------

    def _predict(self, scratch: Path) -> None:
        t0 = time.perf_counter()
        run = self.prepared.run_config
        ready: set[str] = set()  # records whose MSA stage this job finished

        def msa_here(record) -> None:
            """No MSA job ran (Validate found the MSA cached, or msa_mode mmseqs2 searches in this job): the MSA
            comes from the cache or this job's MMseqs2 run, features are made here, and what was searched is
            shared through the S3 cache for the next job."""
            workdir = scratch / record.slug
            if not self._restore(record, workdir):
                self.cache.fetch(record, self.prepared.databases, run.db_preset, run.msa_mode)
                timings = jobrun.run_msa_record(self.stages, record, workdir, self.prepared)
                self.cache.share(timings, self.prepared.databases)
                if timings["msa"]["cache"] != "hit" and run.msa_mode != "mmseqs2":
                    self._log(f"{record.name}: the cached MSA was not found for these databases; searched here")
            ready.add(record.slug)

        if run.msa_mode == "mmseqs2":
            # Every record's MSA first, in one MMseqs2 run on the GPU (S3's entries fetched before it, so it leaves
            # them out), before the predictor's JAX takes the GPU's memory and compiles ahead with their features.
            for record in self.records:
                self.cache.fetch(record, self.prepared.databases, run.db_preset, run.msa_mode)
            for index, record in enumerate(self.records, 1):
                self.progress.at(index, record.name)
                msa_here(record)
                self._check_stop()
        else:  # jackhmmer: a missed entry is searched, record by record
            self.prepared.searches_ahead = []

        def before(index: int, record) -> None:
            if index > 1:
                self._check_stop()
            self.progress.at(index, record.name)
            if record.slug not in ready:
                msa_here(record)

        summaries = jobrun.run_predict_records(self.stages, self.records, lambda r: scratch / r.slug, self.prepared,
                                               before)
        self._check_stop()
        predict_s, t0 = _since(t0), time.perf_counter()
        artifacts = jobrun.publish(self.store, self.job_id, self.records, lambda r: scratch / r.slug, summaries)
        self._guarded(self.repo.update, self.job_id, expected_from={self.state}, artifacts=artifacts)
        n = len(summaries)
        self._report(Progress(stage="outputs", step=n, total=n, message=lifecycle.best_line(summaries)),
                     cost={"predict_s": predict_s, "publish_s": _since(t0)})
        self._log(f"published: {lifecycle.best_line(summaries)}")

    # -- progress, cancel, failure ---------------------------------------------------------------------------

    def _guarded(self, write, *args: Any, **kwargs: Any) -> Any:
        """A write to the job record while it is in this stage's state; a job that left it stops the stage."""
        try:
            return write(*args, **kwargs)
        except errors.ConflictError:
            self.stop.set()
            raise errors.CancelledError(f"the job left {self.state.value}; the {self.stage} stage stops") from None

    def _report(self, progress: Progress, **kwargs: Any) -> None:
        self._guarded(lifecycle.report_progress, self.repo, self.job_id, progress, expected={self.state}, **kwargs)

    def _should_cancel(self) -> bool:
        if not self.stop.is_set() and time.monotonic() - self._checked >= RECORD_POLL_S:
            self._checked = time.monotonic()
            if self.repo.get(self.job_id).state is not self.state:
                self.stop.set()
        return self.stop.is_set()

    def _check_stop(self) -> None:
        if self._should_cancel():
            raise errors.CancelledError(f"the {self.stage} stage was stopped")

    def _cancelled(self, exc: Exception) -> bool:
        if self.stop.is_set() or isinstance(exc, errors.CancelledError):
            return True
        try:
            return self.repo.get(self.job_id).state in (JobState.CANCELLING, JobState.CANCELLED)
        except errors.Af2JobsError:
            return False

    def _failed(self, exc: Exception) -> int:
        if self._cancelled(exc):
            self._log(f"stopped: the job was cancelled ({exc})")
            return EXIT_CANCELLED
        out_of_memory = self.stage == "predict" and is_gpu_out_of_memory(exc)
        error_type = GPU_OUT_OF_MEMORY if out_of_memory else type(exc).__name__
        message = exc.message if isinstance(exc, errors.Af2JobsError) else (str(exc) or repr(exc))
        stage = getattr(exc, "stage", None) or self.stage
        code = EXIT_GPU_OUT_OF_MEMORY if out_of_memory else EXIT_FAILED
        log.error("%s stage failed", self.stage, exc_info=exc, extra={"job_id": self.job_id})
        self._log(f"FAILED in {stage}: {error_type}: {message} (exit code {code})")
        if self.batch_job_id:
            report = {"stage": stage, "type": error_type, "message": message[:1000], "exit_code": code,
                      "batch_job_id": self.batch_job_id}
            try:
                self.work.record_failure(self.job_id, self.batch_job_id, report)
            except ClientError:
                # The exit code still tells the state machine what happened; the job's error is then less precise.
                log.exception("could not record the failure report", extra={"job_id": self.job_id})
        return code

    # -- the job's log ---------------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        self._lines.append(f"{utc_now()} {self.stage}: {message}\n")
        log.info(message, extra={"job_id": self.job_id})

    def _flush_log(self) -> None:
        """Append this stage's lines to jobs/<id>/log.txt (S3 has no append: read, add, write; the stages of a job
        run one after another, so no two write it at once)."""
        if not self._lines:
            return
        key = layout.log_key(self.job_id)
        try:
            try:
                before = self.store.get_bytes(key)
            except errors.NotFoundError:
                before = b""
            self.store.put_bytes(key, before + "".join(self._lines).encode())
        except ClientError:
            log.exception("could not write %s", key, extra={"job_id": self.job_id})
        self._lines.clear()
