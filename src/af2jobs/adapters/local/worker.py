"""The local Orchestrator: a worker inside `af2 serve` that runs queued jobs through the pipeline in-process.

Two pools, so that CPU and GPU work overlap across jobs:

    CPU workers (settings.cpu_workers threads)   QUEUED -> VALIDATING -> MSA     msa_stage for each FASTA record
    GPU slots (one per id in settings.gpus,      MSA -> PREDICTING -> SUCCEEDED  predict_stage for each record,
               or one when it is empty)                                          then publish the results
A job that finished its MSA waits in state MSA (its progress says "waiting for a GPU slot") until a slot is free.
cpu_workers=0 pauses the worker: new jobs stay QUEUED; jobs already past their MSA still finish.

Files of job <id>, under the artifact directory (the store's keys are these paths):
    jobs/<id>/input.fasta                 written by the service at submit
    jobs/<id>/log.txt                     the worker's log of the job; `log_tail()` gives its last lines
    jobs/<id>/work/<record slug>/         the pipeline's working directory; removed once the job SUCCEEDED
    jobs/<id>/output/<record slug>/...    the published results (OUTPUT_FILES, msas/)
    jobs/<id>/output/predictions.json     per record: best model, mean pLDDT, pTM, untrained
The job's `artifacts` maps "<slug>/ranked_0.pdb" (and so on, plus "predictions.json" and "log.txt") to store keys;
its `cost` holds the measured seconds of each phase (validating_s, msa_s, predict_s, publish_s) and, once
SUCCEEDED, `usd`: those phases priced on the AWS instances of the job's queue (af2jobs.cost.job_cost).

The per-record stage logic (run configuration and presets, MSA and predict stages with their "done" markers,
publishing) is af2jobs.jobrun, shared with the Batch entrypoint; this module adds the pools, states and restarts.

Cancel: `cancel(job)` sets a flag that the running stage polls (between databases, recycles and stages), so it
stops within seconds (an XLA compile in progress is not interruptible and finishes first); the job then moves
CANCELLING -> CANCELLED. A job between pools has no running stage and is finished at once.

Restart: `recover()` (run once at start, by the one process that serves this data directory) puts every
unfinished job back on its way: QUEUED ones are queued; VALIDATING/MSA ones run their MSA again (records whose
MSA had finished are kept); PREDICTING ones whose MSA results are all there run their prediction again; the rest
end FAILED saying they were interrupted by a restart; CANCELLING ones become CANCELLED. Nothing stays stuck.
`stop()` stops running stages the same way as a cancel but leaves the jobs' states for the next `recover()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from af2jobs import errors, jobrun
from af2jobs.fasta import FastaRecord
from af2jobs.jobrun import CASP14_NOTE, MSA_DONE, run_config_for
from af2jobs.models import RUNNING, UNFINISHED, Job, JobError, JobEvent, JobRequest, JobState, Progress, utc_now
from af2jobs.ports import ArtifactStore, JobRepository, Notifier
from af2jobs.service import input_key
from af2jobs.settings import Settings

if TYPE_CHECKING:  # the pipeline imports JAX; it is loaded when the worker starts, not when it is built
    from af2jobs.pipeline.params import ParamsProvider
    from af2jobs.pipeline.run import Context

log = logging.getLogger(__name__)

S = JobState
LOG_NAME = "log.txt"
LOG_TAIL = 50
LOCK_NAME = "worker.lock"
INTERRUPTED = "interrupted by a restart"
_PAGE = 500
_JOB_ID = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------------------------------------------------------
# GPU slots


def parse_gpus(text: str) -> list[str | None]:
    """GPU slot ids from AF2_GPUS ("0,1"); one slot on whatever JAX sees (None) when empty."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if any(not i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise errors.ConfigurationError(f"AF2_GPUS (--gpus) must list distinct GPU numbers like 0,1; got {text!r}")
    return list(ids) or [None]


def _devices(slots: list[str | None]) -> list[Any]:
    """The JAX device each slot pins its thread to (None: JAX's default)."""
    if slots == [None]:
        return [None]
    import jax

    by_id = {d.id: d for d in jax.devices()}
    missing = [s for s in slots if int(s) not in by_id]
    if missing:
        raise errors.ConfigurationError(
            f"AF2_GPUS (--gpus) names {', '.join(missing)}, but JAX sees devices {sorted(by_id)} ({jax.default_backend()})"
        )
    return [by_id[int(s)] for s in slots]


# ---------------------------------------------------------------------------------------------------------------
# The worker


@dataclass
class _Run:
    """One job's pass through one pool."""

    job_id: str
    root: Path  # <artifacts>/jobs/<id>
    cancel: threading.Event
    request: JobRequest | None = None
    records: list[FastaRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ctx: Context | None = None
    stage: str = "validating"
    index: int = 0  # the record being worked on, 1-based
    record_name: str = ""

    def workdir(self, record: FastaRecord) -> Path:
        return self.root / "work" / record.slug


class Worker:
    """Runs jobs from a JobRepository through the pipeline on this machine. Start once, stop once."""

    def __init__(
        self,
        repo: JobRepository,
        store: ArtifactStore,
        notifier: Notifier,
        settings: Settings,
        *,
        run_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.repo = repo
        self.store = store
        self.notifier = notifier
        self.settings = settings
        # RunConfig fields applied over every job's (e.g. the tiny model profile for tests and `--profile tiny`).
        self.run_overrides = dict(run_overrides or {})
        self.slots = parse_gpus(settings.gpus)
        # The work and log files sit beside the store's objects, so deleting a job's prefix removes them too.
        self.jobs_root = settings.artifacts_dir / "jobs"
        self._cpu_q: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._gpu_q: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active: dict[str, threading.Event] = {}  # job id -> its cancel flag, while a thread runs it
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._log_lock = threading.Lock()
        self._provider: ParamsProvider | None = None
        self._lock_fd: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the CPU workers and GPU slots. Takes the data directory's worker lock first."""
        if self._threads or self._stopping.is_set():
            raise RuntimeError("a Worker is started once")
        self._take_lock()
        devices = _devices(self.slots)
        if self.settings.cpu_workers:
            import af2jobs.pipeline.run  # noqa: F401  (JAX's import cost here, not in the first job)
        for i in range(self.settings.cpu_workers):
            self._spawn(f"af2-cpu-{i}", self._cpu_loop)
        for slot, device in zip(self.slots, devices, strict=True):
            self._spawn(f"af2-gpu-{slot or 0}", lambda d=device: self._gpu_loop(d))
        log.info("worker started: %d CPU worker(s), GPU slots %s", self.settings.cpu_workers, self.slots)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop: running stages see a cancel flag and stop; their jobs keep their state for recover()."""
        self._stopping.set()
        for thread in self._threads:
            (self._cpu_q if thread.name.startswith("af2-cpu") else self._gpu_q).put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("worker threads still busy after %.0f s: %s", timeout, alive)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _spawn(self, name: str, target) -> None:
        # Daemon threads: a stage stuck in a compile must not keep the process alive after stop().
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _take_lock(self) -> None:
        """One worker per data directory: a second one would 'recover' the first one's running jobs."""
        if self._lock_fd is not None:
            return
        path = self.settings.data_dir / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.ConflictError(
                f"another af2 worker is running on {self.settings.data_dir} (it holds {path})"
            ) from None
        self._lock_fd = fd

    # -- the Orchestrator side -------------------------------------------------------------------------------

    def enqueue(self, job_id: str) -> None:
        """Queue a QUEUED job for its MSA (it waits there while cpu_workers is 0)."""
        self._cpu_q.put((job_id, False))

    def cancel(self, job: Job) -> None:
        """Stop the job's running stage, or finish the cancel at once when no thread runs it. Safe to repeat."""
        with self._lock:
            flag = self._active.get(job.id)
            if flag is not None:
                flag.set()
                return
            # Under the lock, so that no thread claims the job between the check and the state change.
            cancelled = self._finish_cancel(job.id)
        if cancelled is not None:
            self._notify(cancelled, JobEvent.CANCELLED)

    def log_tail(self, job_id: str, n: int = LOG_TAIL) -> list[str]:
        """The last n lines of the job's log (jobs/<id>/log.txt), oldest first."""
        if not _JOB_ID.fullmatch(job_id):
            raise errors.ValidationError(f"{job_id!r} is not a job id", field="id")
        path = self.jobs_root / job_id / LOG_NAME
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=n)]

    # -- restart ---------------------------------------------------------------------------------------------

    def recover(self) -> dict[str, str]:
        """Put every unfinished job back on its way (see the module docstring); returns job id -> what was done."""
        self._take_lock()
        actions: dict[str, str] = {}
        for job in self._unfinished():
            try:
                actions[job.id] = self._recover_one(job)
            except errors.ConflictError:
                actions[job.id] = "changed meanwhile; left alone"
            log.info("recover: job %s was %s: %s", job.id, job.state.value, actions[job.id], extra={"job_id": job.id})
        return actions

    def _unfinished(self) -> list[Job]:
        jobs: list[Job] = []
        token: str | None = None
        while True:
            page, token = self.repo.list(None, state=UNFINISHED, limit=_PAGE, token=token)
            jobs.extend(page)
            if token is None:
                return list(reversed(jobs))  # oldest first: they were waiting longest

    def _recover_one(self, job: Job) -> str:
        if job.state is S.QUEUED:
            self.enqueue(job.id)
            return "queued"
        if job.state is S.CANCELLING:
            cancelled = self._finish_cancel(job.id)
            if cancelled is not None:
                self._notify(cancelled, JobEvent.CANCELLED)
            return "cancelled"
        try:
            records = self._read_records(job)
        except errors.Af2JobsError as exc:
            return self._fail_interrupted(job, f"its input {input_key(job.id)} cannot be read again ({exc.message})")
        if job.state in (S.VALIDATING, S.MSA):
            self._log(job.id, f"{INTERRUPTED} in {job.state.value}: running the MSA again")
            self._cpu_q.put((job.id, True))
            return "MSA again"
        missing = [r.name for r in records if not (self.jobs_root / job.id / "work" / r.slug / MSA_DONE).is_file()]
        if missing:
            return self._fail_interrupted(job, f"the MSA results (features.pkl) of {', '.join(missing)} are missing")
        self._log(job.id, f"{INTERRUPTED} in PREDICTING: predicting again from the finished MSA")
        self._gpu_q.put((job.id, True))
        return "prediction again"

    def _fail_interrupted(self, job: Job, why: str) -> str:
        message = f"{INTERRUPTED} in {job.state.value}, and {why}"
        error = JobError(type="Interrupted", message=message, stage=job.state.value.lower())
        failed = self.repo.transition(job.id, {job.state}, S.FAILED, error=error)
        self._log(job.id, f"FAILED: {message}")
        self._notify(failed, JobEvent.FAILED)
        return f"failed: {message}"

    # -- threads ---------------------------------------------------------------------------------------------

    def _cpu_loop(self) -> None:
        self._serve_queue(self._cpu_q, self._cpu_task)

    def _gpu_loop(self, device: Any) -> None:
        scope = contextlib.nullcontext()
        if device is not None:
            import jax

            scope = jax.default_device(device)  # thread-local: this slot's predictions run on its GPU
        with scope:
            self._serve_queue(self._gpu_q, self._gpu_task)

    def _serve_queue(self, work: queue.Queue[tuple[str, bool] | None], task) -> None:
        while (item := work.get()) is not None and not self._stopping.is_set():
            try:
                task(*item)
            except Exception:
                # Only an error while handling an error gets here (e.g. the database is unreachable). The thread
                # must live on, or the pool shrinks; the job is left for recover() at the next start.
                log.exception("job %s: the worker could not record its outcome", item[0], extra={"job_id": item[0]})

    def _claim(self, job_id: str) -> _Run | None:
        with self._lock:
            if job_id in self._active:
                return None  # queued twice and already running in another thread
            flag = self._active[job_id] = threading.Event()
        return _Run(job_id, self.jobs_root / job_id, flag)

    def _release(self, job_id: str) -> None:
        with self._lock:
            self._active.pop(job_id, None)

    def _cpu_task(self, job_id: str, resume: bool) -> None:
        run = self._claim(job_id)
        if run is None:
            return
        try:
            ready = self._msa_phase(run, resume)
        except Exception as exc:
            self._handle_error(run, exc)
            ready = False
        finally:
            self._release(job_id)
        if ready:
            self._gpu_q.put((job_id, False))

    def _gpu_task(self, job_id: str, resume: bool) -> None:
        run = self._claim(job_id)
        if run is None:
            return
        try:
            self._predict_phase(run, resume)
        except Exception as exc:
            self._handle_error(run, exc)
        finally:
            self._release(job_id)

    # -- the CPU side: VALIDATING and MSA --------------------------------------------------------------------

    def _msa_phase(self, run: _Run, resume: bool) -> bool:
        job = self.repo.get(run.job_id)
        if job.state is S.QUEUED and not resume:
            job = self.repo.transition(
                run.job_id, {S.QUEUED}, S.VALIDATING, artifacts={LOG_NAME: f"jobs/{run.job_id}/{LOG_NAME}"},
                progress=Progress(stage="validating", message="reading the input"),
            )
        elif not (resume and job.state in (S.VALIDATING, S.MSA)):
            return False  # cancelled or finished since it was queued
        t0 = time.perf_counter()
        self._prepare(run, job)
        if job.state is S.VALIDATING:
            self.repo.transition(run.job_id, {S.VALIDATING}, S.MSA, cost={"validating_s": _since(t0)})
        t0 = time.perf_counter()
        self._run_msa(run)
        self._check_cancel(run)
        waiting = Progress(stage="waiting", step=len(run.records), total=len(run.records),
                           message="MSA done; waiting for a GPU slot")
        self.repo.update(run.job_id, expected_from={S.MSA}, cost={"msa_s": _since(t0)}, progress=waiting)
        return True

    def _prepare(self, run: _Run, job: Job) -> None:
        """Read and check the job's input and run configuration, and build its pipeline context."""
        from af2jobs.pipeline.run import Context

        run.request = job.request
        run.records = self._read_records(job)
        # A slot is one GPU: the request's gpu count sizes AWS Batch jobs; here it must not reach other slots' GPUs.
        run_config, run.notes = run_config_for(job.request, self.settings, {**self.run_overrides, "gpus": 1})
        run.ctx = Context(
            settings=self.settings, run=run_config, provider=self._params(),
            progress=lambda stage, event, details: self._on_progress(run, stage, event, details),
            should_cancel=lambda: self._should_cancel(run), **jobrun.report_fields(job.request, run.records),
        )
        self._log(run.job_id, f"{len(run.records)} record(s); run config {run_config.model_dump_json()}")

    def _read_records(self, job: Job) -> list[FastaRecord]:
        return jobrun.read_records(self.store, job, self.settings.max_length)

    def _params(self) -> ParamsProvider:
        # One provider for all jobs: it keeps loaded parameters in memory between jobs.
        from af2jobs.pipeline.params import ParamsProvider

        with self._lock:
            if self._provider is None:
                s = self.settings
                self._provider = ParamsProvider(s.params_root, s.cache_dir / "params-untrained")
            return self._provider

    def _run_msa(self, run: _Run) -> None:
        for index, record in enumerate(run.records, 1):
            run.index, run.record_name = index, record.name
            if jobrun.run_msa_record(record, run.workdir(record), run.ctx) is None:
                self._log(run.job_id, f"{record.name}: MSA finished before a restart; kept")

    # -- the GPU side: PREDICTING, publishing, SUCCEEDED -----------------------------------------------------

    def _predict_phase(self, run: _Run, resume: bool) -> None:
        job = self.repo.get(run.job_id)
        if job.state is S.MSA and not resume:
            job = self.repo.transition(run.job_id, {S.MSA}, S.PREDICTING,
                                       progress=Progress(stage="predict", message="starting the prediction"))
        elif not (resume and job.state is S.PREDICTING):
            if job.state is S.CANCELLING:
                self._handle_error(run, errors.CancelledError("cancelled while waiting for a GPU slot"))
            return
        self._prepare(run, job)
        t0 = time.perf_counter()
        summaries = [self._predict_record(run, i, r) for i, r in enumerate(run.records, 1)]
        predict_s = _since(t0)
        t0 = time.perf_counter()
        artifacts = self._publish(run, summaries)
        measured = {**(job.cost or {}), "predict_s": predict_s, "publish_s": _since(t0)}
        done = self.repo.transition(
            run.job_id, {S.PREDICTING}, S.SUCCEEDED, artifacts=artifacts,
            cost={"predict_s": measured["predict_s"], "publish_s": measured["publish_s"],
                  "usd": _dollars(run, measured)},
            progress=Progress(stage="done", step=len(summaries), total=len(summaries),
                              message=jobrun.best_line(summaries)),
        )
        self._log(run.job_id, f"SUCCEEDED: {jobrun.best_line(summaries)}")
        shutil.rmtree(run.root / "work", ignore_errors=True)  # published; the copies would only take space
        self._notify(done, JobEvent.SUCCEEDED)

    def _predict_record(self, run: _Run, index: int, record: FastaRecord) -> dict[str, Any]:
        run.index, run.record_name = index, record.name
        return jobrun.run_predict_record(record, run.workdir(record), run.ctx, run.request.preset, run.notes)

    def _publish(self, run: _Run, summaries: list[dict[str, Any]]) -> dict[str, str]:
        """Copy each record's results to jobs/<id>/output/<slug>/ and write predictions.json; their keys."""
        run.stage = "outputs"
        try:
            return jobrun.publish(self.store, run.job_id, run.records, run.workdir, summaries)
        except BaseException:
            # Part of the results would pass for all of them (GET /jobs/<id>/files lists them): none, or all.
            shutil.rmtree(run.root / "output", ignore_errors=True)
            raise

    # -- progress, cancel, errors ----------------------------------------------------------------------------

    def _on_progress(self, run: _Run, stage: str, event: str, details: dict) -> None:
        run.stage = stage
        message = jobrun.describe(run.record_name, stage, event, details)
        self._log(run.job_id, message)
        progress = Progress(stage=stage, step=run.index, total=len(run.records), message=message[:500])
        self.repo.update(run.job_id, progress=progress)

    def _should_cancel(self, run: _Run) -> bool:
        return run.cancel.is_set() or self._stopping.is_set()

    def _check_cancel(self, run: _Run) -> None:
        if self._should_cancel(run):
            raise errors.CancelledError(f"the job was cancelled during {run.stage}")

    def _handle_error(self, run: _Run, exc: Exception) -> None:
        """Any exception of a job's pass ends here: cancelled, left for recover() (at shutdown), or FAILED."""
        state = self.repo.get(run.job_id).state
        if state is S.CANCELLING or (isinstance(exc, errors.CancelledError) and run.cancel.is_set()):
            cancelled = self._finish_cancel(run.job_id)
            if cancelled is not None:
                self._notify(cancelled, JobEvent.CANCELLED)
        elif state not in UNFINISHED:
            self._log(run.job_id, f"stopped: the job is already {state.value}")
        elif isinstance(exc, errors.CancelledError) and self._stopping.is_set():
            self._log(run.job_id, f"stopped by a shutdown during {run.stage}; left {state.value} for the next start")
        else:
            self._fail(run, exc)

    def _fail(self, run: _Run, exc: Exception) -> None:
        message = exc.message if isinstance(exc, errors.Af2JobsError) else (str(exc) or repr(exc))
        error = JobError(type=type(exc).__name__, message=message, stage=getattr(exc, "stage", None) or run.stage)
        log.error("job %s failed in %s", run.job_id, error.stage, exc_info=exc, extra={"job_id": run.job_id})
        try:
            failed = self.repo.transition(run.job_id, RUNNING | {S.QUEUED}, S.FAILED, error=error)
        except errors.ConflictError:
            # Cancelled while the error was being handled: that state change wins.
            cancelled = self._finish_cancel(run.job_id)
            if cancelled is not None:
                self._notify(cancelled, JobEvent.CANCELLED)
            return
        self._log(run.job_id, f"FAILED in {error.stage}: {error.type}: {error.message}")
        self._notify(failed, JobEvent.FAILED)

    def _finish_cancel(self, job_id: str) -> Job | None:
        """Move the job on to CANCELLED (through CANCELLING where the graph needs it); None if another actor
        moved it first (that actor notifies)."""
        try:
            job = self.repo.get(job_id)
            if job.state is S.QUEUED:
                job = self.repo.transition(job_id, {S.QUEUED}, S.CANCELLED)
            elif job.state in UNFINISHED:
                if job.state in RUNNING:
                    self.repo.transition(job_id, RUNNING, S.CANCELLING)
                job = self.repo.transition(job_id, {S.CANCELLING}, S.CANCELLED,
                                           progress=Progress(stage="cancelled", message="cancelled"))
            else:
                return None
        except errors.ConflictError:
            return None
        self._log(job_id, "CANCELLED")
        return job

    # -- log and notifications -------------------------------------------------------------------------------

    def _log(self, job_id: str, message: str) -> None:
        path = self.jobs_root / job_id / LOG_NAME
        with self._log_lock:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(f"{utc_now()} {message}\n")
            except OSError as exc:
                # A full disk must not stop the job's outcome from being recorded and notified; the server's
                # log still has the line.
                log.warning("job %s: cannot write %s: %s", job_id, path, exc, extra={"job_id": job_id})
        log.info("job %s: %s", job_id, message, extra={"job_id": job_id})

    def _notify(self, job: Job, event: JobEvent) -> None:
        try:
            self.notifier.notify(job, event)
        except Exception:
            log.exception("notifying %s for job %s failed", event.value, job.id, extra={"job_id": job.id})


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def _dollars(run: _Run, measured: Mapping[str, Any]) -> dict[str, Any]:
    """The job's cost in dollars, priced as if its phases had run on the AWS instances of its queue."""
    from af2jobs.cost import job_cost

    queue = run.request.queue_for(max(len(r.sequence) for r in run.records))
    return job_cost(measured, queue=queue, gpus=run.request.gpu)


class LocalOrchestrator:
    """The Orchestrator port over a Worker in the same process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def start(self, job: Job) -> None:
        self.worker.enqueue(job.id)

    def cancel(self, job: Job) -> None:
        self.worker.cancel(job)


__all__ = ["LocalOrchestrator", "Worker", "parse_gpus", "run_config_for", "CASP14_NOTE", "INTERRUPTED"]
