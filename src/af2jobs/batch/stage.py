"""One Batch stage of one job: af2jobs.jobrun's record-by-record stages between S3 and a scratch folder.
af2jobs.batch describes the program, its file contract in S3 and its exit codes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from af2jobs import errors, jobrun
from af2jobs.batch import EXIT_CANCELLED, EXIT_FAILED, EXIT_GPU_OUT_OF_MEMORY, EXIT_OK, STAGE_STATES
from af2jobs.batch.usage import Metrics, UsageReporter
from af2jobs.fasta import FastaRecord
from af2jobs.models import Job, JobState, Progress, utc_now
from af2jobs.ports import ArtifactStore, JobRepository
from af2jobs.settings import Settings

if TYPE_CHECKING:
    from af2jobs.pipeline.run import Context

log = logging.getLogger(__name__)

LOG_NAME = "log.txt"
# How often a stage with no progress to report (a long search, a compile) re-reads its job's state, so that it
# stops even if the SIGTERM of TerminateJob never came (say the orchestrator could not terminate it).
RECORD_POLL_S = 15.0
# XLA reports a failed device allocation as this status at the head of the runtime error's text; JAX has no
# exception type of its own for it (JaxRuntimeError carries every XLA status).
XLA_OUT_OF_MEMORY = "RESOURCE_EXHAUSTED"
# The pipeline's local MSA cache is settings.cache_dir/msa/<key[:2]>/<key> (af2jobs.pipeline.run.msa_stage and
# pipeline.msa.run_msa), with report.json written last: an S3 entry is fetched into that place.
MSA_CACHE_REPORT = "report.json"


class WorkArea(Protocol):
    def save(self, job_id: str, slug: str, workdir: Path, last: str | None = None) -> list[str]: ...

    def restore(self, job_id: str, slug: str, workdir: Path) -> int: ...

    def record_failure(self, job_id: str, batch_job_id: str, report: dict[str, Any]) -> None: ...


class SharedMsaCache(Protocol):
    def has(self, key: str) -> bool: ...

    def fetch(self, key: str, entry: Path) -> bool: ...

    def store(self, key: str, entry: Path) -> None: ...

    def publish_manifest(self, databases: list[dict[str, Any]]) -> None: ...


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """Whether the exception, or one it was raised from, is XLA failing to allocate device memory."""
    import jax

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

    def __init__(
        self,
        stage: str,
        job_id: str,
        *,
        settings: Settings,
        repo: JobRepository,
        store: ArtifactStore,
        work: WorkArea,
        msa_cache: SharedMsaCache,
        batch_job_id: str | None,
        stop: threading.Event,
        run_overrides: Mapping[str, Any] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.stage = stage
        self.state: JobState = STAGE_STATES[stage]
        self.job_id = job_id
        self.settings = settings
        self.repo = repo
        self.store = store
        self.work = work
        self.msa_cache = msa_cache
        self.batch_job_id = batch_job_id
        self.stop = stop
        self.run_overrides = dict(run_overrides or {})
        self.metrics = metrics  # the container's CPU and memory go here while the stage runs (af2jobs.batch.usage)
        self.log_key = f"jobs/{job_id}/{LOG_NAME}"
        self._lines: list[str] = []
        self._checked = time.monotonic()
        self.job: Job | None = None
        self.records: list[FastaRecord] = []
        self.notes: list[str] = []
        self.ctx: Context | None = None
        self.index = 0  # the record being worked on, 1-based
        self.record_name = ""

    @classmethod
    def from_settings(
        cls, stage: str, job_id: str, *, batch_job_id: str | None, stop: threading.Event,
        run_overrides: Mapping[str, Any] | None = None,
    ) -> BatchStage:
        """The stage with the AWS adapters that Settings (AF2_MODE=aws) names."""
        from af2jobs import wiring
        from af2jobs.adapters.aws.cloudwatch import PutMetricData
        from af2jobs.adapters.aws.workarea import S3MsaCache, S3Objects, S3WorkArea

        settings = Settings()
        if settings.mode != "aws":
            raise errors.ConfigurationError("python -m af2jobs.batch runs on AWS Batch: it needs AF2_MODE=aws")
        services = wiring.build(settings)
        objects = S3Objects(settings.bucket)
        return cls(stage, job_id, settings=settings, repo=services.repo, store=services.store,
                   work=S3WorkArea(objects), msa_cache=S3MsaCache(objects), batch_job_id=batch_job_id, stop=stop,
                   run_overrides=run_overrides, metrics=PutMetricData())

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
        job = self.repo.get(self.job_id)
        if job.state in (JobState.CANCELLING, JobState.CANCELLED):
            raise errors.CancelledError(f"the job is {job.state.value}")
        if job.state is not self.state:
            raise errors.ConflictError(
                f"job {self.job_id} is {job.state.value}; the {self.stage} stage runs jobs in {self.state.value}"
            )
        artifacts = {LOG_NAME: self.log_key}
        if self.batch_job_id:
            from af2jobs.adapters.aws.stepfunctions import batch_job_artifact

            artifacts[batch_job_artifact(self.batch_job_id)] = self.stage
        self._update(artifacts=artifacts)
        self.job = job
        self.records = jobrun.read_records(self.store, job, self.settings.max_length)
        run_config, self.notes = jobrun.run_config_for(job.request, self.settings, self.run_overrides)
        from af2jobs.pipeline.run import Context

        self.ctx = Context(settings=self.settings, run=run_config, progress=self._on_progress,
                           should_cancel=self._should_cancel, **jobrun.report_fields(job.request, self.records))
        self._log(f"{self.stage} stage of {len(self.records)} record(s), Batch job {self.batch_job_id}; "
                  f"run config {run_config.model_dump_json()}")

    # -- MSA -------------------------------------------------------------------------------------------------

    def _msa(self, scratch: Path) -> None:
        t0 = time.perf_counter()
        for index, record in enumerate(self.records, 1):
            self.index, self.record_name = index, record.name
            workdir = scratch / record.slug
            if self._restore(record, workdir):
                self._log(f"{record.name}: MSA finished by an earlier attempt; kept")
                continue
            self._fetch_cached_msa(record)
            timings = jobrun.run_msa_record(record, workdir, self.ctx)
            self._share_msa(timings, workdir)
            self.work.save(self.job_id, record.slug, workdir, last=jobrun.MSA_DONE)
            self._check_stop()
        n = len(self.records)
        self._update(cost={"msa_s": _since(t0)},
                     progress=Progress(stage="msa", step=n, total=n, message="MSA done; waiting for a GPU"))

    def _restore(self, record: FastaRecord, workdir: Path) -> bool:
        """The record's work dir from S3, if an MSA stage finished it; otherwise an empty place for one."""
        if self.work.restore(self.job_id, record.slug, workdir) and jobrun.msa_done(workdir):
            return True
        shutil.rmtree(workdir, ignore_errors=True)
        return False

    def _local_msa_entry(self, key: str) -> Path:
        return self.settings.cache_dir / "msa" / key[:2] / key

    def _fetch_cached_msa(self, record: FastaRecord) -> None:
        """Put the S3 cache's entry for the record where the pipeline's local cache looks, if S3 has one."""
        from af2jobs.pipeline.msa import cache_key

        if not self.settings.msa_cache:
            return
        key = cache_key(record.sequence, self.ctx.databases)
        entry = self._local_msa_entry(key)
        if (entry / MSA_CACHE_REPORT).is_file():
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Fetched beside the entry and renamed into place: other jobs read this cache (on the shared file system).
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        try:
            if self.msa_cache.fetch(key, staging):
                os.replace(staging, entry)
                self._log(f"{record.name}: MSA fetched from the shared cache")
        except OSError:
            pass  # another job put the same entry in place first: theirs is as good
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _share_msa(self, timings: dict[str, Any], workdir: Path) -> None:
        """The record's MSA into the S3 cache, and the databases it was searched in as the cache's manifest, so
        that Validate (outside the VPC) can tell later jobs their MSA is cached. Best effort: the MSA is done."""
        msa = timings["msa"]
        if msa["cache"] == "off":
            return
        entry = self._local_msa_entry(msa["cache_key"])
        try:
            if (entry / MSA_CACHE_REPORT).is_file() and not self.msa_cache.has(msa["cache_key"]):
                self.msa_cache.store(msa["cache_key"], entry)
            self.msa_cache.publish_manifest(json.loads((workdir / "msas" / "databases.json").read_text()))
        except (ClientError, OSError) as exc:
            log.warning("could not share the MSA through the S3 cache: %s", exc, extra={"job_id": self.job_id})

    # -- predict ---------------------------------------------------------------------------------------------

    def _predict(self, scratch: Path) -> None:
        t0 = time.perf_counter()
        summaries = []
        for index, record in enumerate(self.records, 1):
            self.index, self.record_name = index, record.name
            workdir = scratch / record.slug
            if not self._restore(record, workdir):
                # No MSA job ran (Validate found the MSA cached): its MSA comes from the cache, features are made here.
                self._fetch_cached_msa(record)
                timings = jobrun.run_msa_record(record, workdir, self.ctx)
                if timings["msa"]["cache"] != "hit":
                    self._log(f"{record.name}: the cached MSA was not found for these databases; searched here")
            summaries.append(jobrun.run_predict_record(record, workdir, self.ctx, self.job.request.preset,
                                                       self.notes))
            self._check_stop()
        predict_s, t0 = _since(t0), time.perf_counter()
        artifacts = jobrun.publish(self.store, self.job_id, self.records, lambda r: scratch / r.slug, summaries)
        n = len(summaries)
        self._update(artifacts=artifacts, cost={"predict_s": predict_s, "publish_s": _since(t0)},
                     progress=Progress(stage="outputs", step=n, total=n, message=jobrun.best_line(summaries)))
        self._log(f"published: {jobrun.best_line(summaries)}")

    # -- progress, cancel, failure ---------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        """Change the job record while it is in this stage's state; a job that left it stops the stage."""
        try:
            self.repo.update(self.job_id, expected_from={self.state}, **changes)
        except errors.ConflictError:
            self.stop.set()
            raise errors.CancelledError(f"the job left {self.state.value}; the {self.stage} stage stops") from None

    def _on_progress(self, stage: str, event: str, details: dict) -> None:
        message = jobrun.describe(self.record_name, stage, event, details)
        self._log(message)
        self._update(progress=Progress(stage=stage, step=self.index, total=len(self.records), message=message[:500]))

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
        error_type = "GpuOutOfMemory" if out_of_memory else type(exc).__name__
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
        try:
            try:
                before = self.store.get_bytes(self.log_key)
            except errors.NotFoundError:
                before = b""
            self.store.put_bytes(self.log_key, before + "".join(self._lines).encode())
        except ClientError:
            log.exception("could not write %s", self.log_key, extra={"job_id": self.job_id})
        self._lines.clear()
