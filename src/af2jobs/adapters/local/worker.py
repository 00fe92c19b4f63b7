"""The local Orchestrator: a worker inside `af2 serve` that runs queued jobs through the stages.

Two pools, so that CPU and GPU work overlap across jobs:

    CPU workers (settings.cpu_workers threads)   QUEUED -> VALIDATING -> MSA     the MSA stage of each FASTA record
    GPU slots (one per id in settings.gpus,      MSA -> PREDICTING -> SUCCEEDED  the predict stage of each record,
               or one when it is empty)                                          then the results published
A job that finished its MSA waits in state MSA (its progress says "waiting for a GPU slot") until a slot is free.
cpu_workers=0 pauses the worker: new jobs stay QUEUED; jobs already past their MSA still finish. `run_now(id)`
runs one job's whole pass in the calling thread instead (tests, scripts).

Isolation (isolate=True, what `af2 serve` runs): each GPU slot predicts in a process of its own (slot.py), which
keeps its compiled models across jobs; a prediction that dies there (out of memory, a crash) fails its job alone,
saying how it died, and the next job gets a new process. The server's own JAX stays on the CPU. Without
isolation (tests that patch the pipeline) a slot predicts in its thread.

Memory admission (af2jobs.admission, af2jobs.memory): once a slot has said what it runs on, a job whose record's
prediction is estimated to need more memory than a slot has fails at VALIDATING, before its MSA (with the least MSA
it could have), and again before its prediction (with its MSA's depth), saying so.

Every state change is af2jobs.lifecycle's; the per-record stages, their "done" markers and publishing are
af2jobs.jobrun's, with the stage runner this worker is given (the real pipeline unless a test passes another).
The job's files mirror its store keys (af2jobs.layout) under the artifact directory: its log (jobs/<id>/log.txt),
its records' work dirs (jobs/<id>/work/<slug>/, removed once the job ends) and its published results. Its `cost`
holds the measured seconds of each phase and, once SUCCEEDED, `usd` (af2jobs.cost.job_cost).

Cancel: `cancel(job)` sets a flag that the running stage polls (between databases, recycles and stages), so it
stops within seconds; a prediction that has not stopped CANCEL_GRACE_S later (an XLA compile, a long iteration) has
its process killed. The job then moves CANCELLING -> CANCELLED. A job between pools is finished at once.

Restart: `recover()` (run once at start, by the one process that serves this data directory) puts every
unfinished job back on its way: QUEUED ones are queued; VALIDATING/MSA ones run their MSA again (records whose
MSA had finished are kept); PREDICTING ones whose MSA results are all there run their prediction again; the rest
end FAILED saying they were interrupted by a restart, as does a job found unfinished by more than MAX_RESTARTS
restarts; CANCELLING ones become CANCELLED. Nothing stays stuck, and nothing crashes the server at every start.
`stop()` stops running stages the same way as a cancel but leaves the jobs' states for the next `recover()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from af2jobs import admission, atomic, errors, jobrun, layout, lifecycle, memory
from af2jobs.adapters.local.gpuslots import devices, parse_gpus
from af2jobs.adapters.local.jobpass import JobPass
from af2jobs.adapters.local.slot import (
    CANCEL_GRACE_S, START_S, Ended, PredictionProcess, keep_off_the_gpu, restore_platforms, slot_info,
)
from af2jobs.jobrun import MSA_DONE, PipelineStages, StageRunner
from af2jobs.memory import Capacity
from af2jobs.models import RUNNING, UNFINISHED, Job, JobEvent, JobState, utc_now
from af2jobs.ports import ArtifactStore, JobRepository, Notifier
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

S = JobState
LOCK_NAME = "worker.lock"
_PAGE = 500
# A job found unfinished by more restarts than this is failed rather than run again: a record that brings the whole
# server down (where predictions run in its process) would otherwise do so at every start.
MAX_RESTARTS = 2
RESTARTS_NAME = ".restarts"
CLEAN_STOP_NAME = "worker.stopped"  # written by stop(): the next start follows a clean stop, not a crash
# How long an MSA waits for the slots to say what they run on (a prediction process's start, at most START_S).
SLOTS_UP_S = START_S + 30


class Worker:
    """Runs jobs from a JobRepository through the stages on this machine. Start once, stop once."""

    def __init__(self, repo: JobRepository, store: ArtifactStore, notifier: Notifier, settings: Settings, *,
                 stages: StageRunner | None = None, run_overrides: dict[str, Any] | None = None,
                 isolate: bool = False, slot_stages: Callable[[], StageRunner] | None = None,
                 make_parts: Callable[[Settings], Any] | None = None) -> None:
        self.repo = repo
        self.store = store
        self.notifier = notifier
        self.settings = settings
        # A slot is one GPU: the request's gpu count sizes AWS Batch jobs; here it must not reach other slots' GPUs.
        self.overrides = {**(run_overrides or {}), "gpus": 1}
        self.stages = stages or PipelineStages(settings, self.overrides)
        # isolate: each GPU slot predicts in a process of its own (slot.py), its stages the pipeline's or, in
        # tests, slot_stages' (a picklable factory); otherwise in the slot's thread, with self.stages.
        self.isolate = isolate
        self.slot_stages = slot_stages
        # What a slot's process builds its own repository, store and notifier with (wiring.local_parts: picklable).
        if isolate and make_parts is None:
            raise ValueError("an isolating Worker needs make_parts (wiring.local_parts) for its slots' processes")
        self.make_parts = make_parts
        self._processes: dict[str, PredictionProcess] = {}  # job id -> the process predicting it
        self._slot_processes: list[PredictionProcess] = []
        self._slot_info: Capacity | None = None
        self._slots_up = threading.Event()
        self._after_crash = True  # recover() reads it off the data directory
        self.slots = parse_gpus(settings.gpus)
        self.root = settings.artifacts_dir  # the job's files sit at their store keys under it
        self._cpu_q: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._gpu_q: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active: dict[str, threading.Event] = {}  # job id -> its cancel flag, while a thread runs it
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._log_lock = threading.Lock()
        self._lock_fd: int | None = None

    # -- start and stop --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the CPU workers and GPU slots. Takes the data directory's worker lock first."""
        if self._threads or self._stopping.is_set():
            raise RuntimeError("a Worker is started once")
        self._take_lock()
        if self.isolate:
            jax_platforms = keep_off_the_gpu()
            for slot in self.slots:
                process = PredictionProcess(self.settings, self.overrides, slot, jax_platforms=jax_platforms,
                                            stages=self.slot_stages,
                                            host=functools.partial(slot_host, self.make_parts))
                self._spawn(f"af2-gpu-{slot or 0}", lambda p=process: self._slot_loop(p))
        else:
            for slot, device in zip(self.slots, devices(self.slots), strict=True):
                self._spawn(f"af2-gpu-{slot or 0}", lambda d=device: self._gpu_loop(d))
            self._slots_up.set()
        if self.settings.cpu_workers and isinstance(self.stages, PipelineStages):
            import af2jobs.pipeline.run  # noqa: F401  (JAX's import cost here, not in the first job)
        for i in range(self.settings.cpu_workers):
            self._spawn(f"af2-cpu-{i}", lambda: self._serve_queue(self._cpu_q, self._cpu_task))
        log.info("worker started: %d CPU worker(s), GPU slots %s", self.settings.cpu_workers, self.slots)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop: running stages see a cancel flag and stop; their jobs keep their state for recover()."""
        self._stopping.set()
        with self._lock:
            processes = list(self._slot_processes)
        for process in processes:  # a running pass there is left for recover(), as one in a thread
            process.request_stop()
        for thread in self._threads:
            (self._cpu_q if thread.name.startswith("af2-cpu") else self._gpu_q).put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("worker threads still busy after %.0f s: %s", timeout, alive)
        if self._lock_fd is not None:
            try:  # the next recover() does not count this stop as a crash (MAX_RESTARTS)
                atomic.write_text(self.settings.data_dir / CLEAN_STOP_NAME, f"{utc_now()}\n")
            except OSError as exc:
                log.warning("the clean stop cannot be recorded (%s)", exc)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self.isolate:
            restore_platforms()

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
                process = self._processes.get(job.id)
                if process is not None:  # its prediction runs in a slot's process: told there, killed if it lingers
                    process.cancel(job.id)
                return
            # Under the lock, so that no thread claims the job between the check and the state change.
            cancelled = self.finish_cancel(job.id)
        if cancelled is not None:
            self.notify(cancelled, JobEvent.CANCELLED)

    def run_now(self, job_id: str) -> Job:
        """Run a QUEUED job's whole pass (MSA, then prediction) in this thread; the job as it ended."""
        if self._run_claimed(job_id, lambda run: run.msa_phase(False)):
            self._run_claimed(job_id, lambda run: run.predict_phase(False))
        return self.repo.get(job_id)

    def predict_here(self, job_id: str, resume: bool) -> None:
        """The job's predict phase in this thread (what a slot's prediction process runs)."""
        self._run_claimed(job_id, lambda run: run.predict_phase(resume))

    def signal_cancel(self, job_id: str) -> None:
        """Set the cancel flag of a job this worker runs (the server's cancel, relayed to a prediction process)."""
        with self._lock:
            flag = self._active.get(job_id)
        if flag is not None:
            flag.set()

    # -- restart ---------------------------------------------------------------------------------------------

    def recover(self) -> dict[str, str]:
        """Put every unfinished job back on its way (see the module docstring); returns job id -> what was done."""
        self._take_lock()
        clean = self.settings.data_dir / CLEAN_STOP_NAME
        self._after_crash = not clean.is_file()
        clean.unlink(missing_ok=True)
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
            cancelled = self.finish_cancel(job.id)
            if cancelled is not None:
                self.notify(cancelled, JobEvent.CANCELLED)
            return "cancelled"
        restarts = self._restarted(job.id) if self._after_crash else 0
        if restarts > MAX_RESTARTS:
            return self._fail_interrupted(job, f"the server has now crashed {restarts} times while it was unfinished: "
                                               "it is not run again, in case what it runs is what stops the server "
                                               "(submit it again to retry)")
        try:
            records = jobrun.read_records(self.store, job, self.settings.max_length)
        except errors.Af2JobsError as exc:
            why = f"its input {layout.input_key(job.id)} cannot be read again ({exc.message})"
            return self._fail_interrupted(job, why)
        if job.state in (S.VALIDATING, S.MSA):
            self.log(job.id, f"{lifecycle.INTERRUPTED} in {job.state.value}: running the MSA again")
            self._cpu_q.put((job.id, True))
            return "MSA again"
        missing = [r.name for r in records if not (self.workdir(job.id, r.slug) / MSA_DONE).is_file()]
        if missing:
            return self._fail_interrupted(job, f"the MSA results (features.pkl) of {', '.join(missing)} are missing")
        self.log(job.id, f"{lifecycle.INTERRUPTED} in PREDICTING: predicting again from the finished MSA")
        self._gpu_q.put((job.id, True))
        return "prediction again"

    def _restarted(self, job_id: str) -> int:
        """How many starts after a crash have found the job unfinished, this one counted (kept in its work dir,
        which goes when the job ends). A start after a clean stop() is not counted."""
        path = self.root / layout.work_root(job_id) / RESTARTS_NAME
        try:
            count = int(path.read_text()) + 1
        except (OSError, ValueError):
            count = 1
        try:
            atomic.write_text(path, f"{count}\n")
        except OSError as exc:
            log.warning("job %s: the restart count cannot be kept (%s)", job_id, exc, extra={"job_id": job_id})
        return count

    def _fail_interrupted(self, job: Job, why: str) -> str:
        failed = lifecycle.interrupted(self.repo, job, why)
        self.clear_work(job.id)
        self.log(job.id, f"FAILED: {failed.error.message}")
        self.notify(failed, JobEvent.FAILED)
        return f"failed: {failed.error.message}"

    # -- threads ---------------------------------------------------------------------------------------------

    def _slot_loop(self, process: PredictionProcess) -> None:
        """A GPU slot whose predictions run in `process` (started first: its JAX start, not the first job's)."""
        with self._lock:
            self._slot_processes.append(process)
        process.on_ready = self._slot_ready  # at every start: the first, and each after a death
        try:
            process.start()
        except Exception:  # noqa: BLE001 - each job tries to start it again, and fails saying why: none waits for ever
            log.exception("GPU slot %s: its prediction process did not start", process.slot or 0)
        finally:
            self._slots_up.set()
        try:
            self._serve_queue(self._gpu_q, lambda job_id, resume: self._predict_in(process, job_id, resume))
        finally:
            process.close()

    def _slot_ready(self, info: Capacity) -> None:
        with self._lock:
            if self._slot_info is None or _room(info) < _room(self._slot_info):
                self._slot_info = info  # the smallest slot's: a job must fit whichever takes it
        if isinstance(self.stages, PipelineStages):
            self.stages.for_gpu = info.backend == "gpu"  # the MSA stage prepares the GPU's inputs

    def _predict_in(self, process: PredictionProcess, job_id: str, resume: bool) -> None:
        """The job's predict phase in the slot's process (claimed here as a thread's pass is: _run_claimed)."""

        def predict(run: JobPass) -> None:
            job = run.may_predict(resume)
            if job is None:
                return  # moved on since it was queued: nothing for the process to do
            if not resume:  # its MSA made: each record's prediction, with its MSA's depth, fits the slots
                records = jobrun.read_records(self.store, job, self.settings.max_length)
                depths = {r.slug: jobrun.msa_rows(self.workdir(job.id, r.slug)) for r in records}
                self.check_memory(job, records, {slug: n for slug, n in depths.items() if n is not None})
            with self._lock:
                self._processes[job_id] = process
            try:
                ended = process.run(job_id, resume)
            finally:
                with self._lock:
                    self._processes.pop(job_id, None)
            if not ended.finished:
                self._prediction_died(job_id, ended, process)

        self._run_claimed(job_id, predict)

    def check_memory(self, job: Job, records: list, depths: dict[str, int] | None = None) -> None:
        """MemoryLimitError when a record's estimated prediction needs more memory than a slot has (admission.py);
        nothing to check before a slot has said what it runs on."""
        info = self._slot_info
        if info is None:
            return
        run = jobrun.run_config_for(job.request, self.settings, self.overrides, gpu=info.backend == "gpu")[0]
        admission.check_memory(records, run, info, depths=depths)

    def _prediction_died(self, job_id: str, ended: Ended, process: PredictionProcess) -> None:
        """The prediction process died under the job: the job ends CANCELLED (a cancel killed it) or FAILED saying
        how it died; what it may have half published goes. Other jobs never noticed."""
        job = self.repo.get(job_id)
        if job.state not in UNFINISHED or self.stopping:
            log.warning("job %s: its prediction process %s (the job %s)", job_id, ended.cause(),
                        "is left for the next start" if self.stopping else f"was {job.state.value}",
                        extra={"job_id": job_id})
            return
        self.clear_output(job_id)
        if job.state is S.CANCELLING or ended.killed_for_cancel:
            self.log(job_id, f"the prediction did not stop within {CANCEL_GRACE_S:.0f} s of the cancel: its "
                             "process was killed")
            JobPass(self, job_id, threading.Event()).handle_error(errors.CancelledError("killed on cancel"))
            return
        peak = f" at {memory.gib(ended.peak_bytes)} resident" if ended.peak_bytes else ""
        info = process.info
        have = f"; a prediction here may use {info.describe()}" if info is not None else ""
        message = (f"the prediction process {ended.cause()}{peak}{have}. This job's records may need more memory "
                   "than this machine has (their estimates are in the log); the server and other jobs went on")
        JobPass(self, job_id, threading.Event()).handle_error(errors.PredictionDiedError(message, stage="predict"))

    def _gpu_loop(self, device: Any) -> None:
        scope = contextlib.nullcontext()
        if device is not None:
            import jax

            scope = jax.default_device(device)  # thread-local: this slot's predictions run on its GPU
        with scope:
            try:
                self._slot_ready(slot_info(self.stages, self.settings))
            except Exception:  # noqa: BLE001 - no admission then; the slot serves its jobs all the same
                log.exception("GPU slot: what it runs on could not be read")
            self._serve_queue(self._gpu_q, self._gpu_task)

    def _serve_queue(self, work: queue.Queue[tuple[str, bool] | None], task) -> None:
        while (item := work.get()) is not None and not self._stopping.is_set():
            try:
                task(*item)
            except Exception:
                # Only an error while handling an error gets here (e.g. the database is unreachable). The thread
                # must live on, or the pool shrinks; the job is left for recover() at the next start.
                log.exception("job %s: the worker could not record its outcome", item[0], extra={"job_id": item[0]})

    def _cpu_task(self, job_id: str, resume: bool) -> None:
        # What the slots run on decides the run's MSA caps and inputs, and the memory a record may need.
        self._slots_up.wait(SLOTS_UP_S)
        if self._run_claimed(job_id, lambda run: run.msa_phase(resume)):
            self._gpu_q.put((job_id, False))

    def _gpu_task(self, job_id: str, resume: bool) -> None:
        self._run_claimed(job_id, lambda run: run.predict_phase(resume))

    def _run_claimed(self, job_id: str, phase) -> Any:
        with self._lock:
            if job_id in self._active:
                return None  # queued twice and already running in another thread
            flag = self._active[job_id] = threading.Event()
        run = JobPass(self, job_id, flag)
        try:
            return phase(run)
        except Exception as exc:
            run.handle_error(exc)
            return None
        finally:
            with self._lock:
                self._active.pop(job_id, None)

    # -- what a job's pass needs -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def workdir(self, job_id: str, slug: str) -> Path:
        return self.root / layout.work_prefix(job_id, slug)

    def clear_output(self, job_id: str) -> None:
        """Remove what a publish cut short left under the job's output/: no results, or all of them."""
        shutil.rmtree(self.root / layout.output_prefix(job_id), ignore_errors=True)

    def clear_work(self, job_id: str) -> None:
        """Remove a finished job's work dirs (the stages' own files: markers, features, prepared inputs). Its
        results are published by then, or there are none to come; the MSA cache keeps its searches."""
        shutil.rmtree(self.root / layout.work_root(job_id), ignore_errors=True)

    def finish_cancel(self, job_id: str) -> Job | None:
        """The job CANCELLED (through CANCELLING where it ran); None if another actor moved it first (that actor
        notifies)."""
        try:
            if self.repo.get(job_id).state in RUNNING:
                lifecycle.request_cancel(self.repo, job_id)
            job = lifecycle.finish_cancel(self.repo, job_id)
        except errors.ConflictError:
            return None
        self.clear_work(job_id)
        self.log(job_id, "CANCELLED")
        return job

    def log(self, job_id: str, message: str) -> None:
        """A line in the job's log (jobs/<id>/log.txt) and in the server's."""
        path = self.root / layout.log_key(job_id)
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

    def notify(self, job: Job, event: JobEvent) -> None:
        try:
            self.notifier.notify(job, event)
        except Exception:
            log.exception("notifying %s for job %s failed", event.value, job.id, extra={"job_id": job.id})


def _room(capacity: Capacity) -> float:
    return float("inf") if capacity.bytes is None else capacity.bytes


def slot_host(make_parts: Callable[[Settings], Any], settings: Settings, overrides: dict[str, Any],
              stages: StageRunner | None) -> Worker:
    """The Worker that predicts in a GPU slot's process (slot.py), on its own repository, store and notifier."""
    parts = make_parts(settings)
    return Worker(parts.repo, parts.store, parts.notifier, settings, run_overrides=overrides, stages=stages)


class LocalOrchestrator:
    """The Orchestrator port over a Worker in the same process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def start(self, job: Job) -> None:
        self.worker.enqueue(job.id)

    def cancel(self, job: Job) -> None:
        self.worker.cancel(job)


__all__ = ["LocalOrchestrator", "Worker", "slot_host"]
