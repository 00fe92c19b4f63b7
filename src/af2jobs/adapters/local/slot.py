"""A GPU slot's prediction process: where the local worker runs the predict phase of each job, so that a prediction
that takes more memory than the machine has (or crashes the device, or hangs in a compile) ends that job alone, not
`af2 serve` and every other user's API with it.

    PredictionProcess.start()           spawns the process; it opens the data directory's adapters, makes JAX
                                        ready on its GPU (the slot's alone: CUDA_VISIBLE_DEVICES) and says what it
                                        runs on: Capacity (backend, device, the memory a prediction may use)
    PredictionProcess.run(job, resume)  the job's predict phase there (jobpass.JobPass, as in the slot's thread);
                                        returns when it ended: finished (its outcome is on the job's record) or the
                                        process died (Ended says how, and the peak memory it reached)
    PredictionProcess.cancel(job)       the cancel flag there; a prediction that has not stopped CANCEL_GRACE_S
                                        later (an XLA compile, a long recycling iteration) has its process killed
    PredictionProcess.close()           stops it: a running pass is left for the next start, as at a shutdown

The process lives across jobs, so that its compiled models and parameters stay loaded; after a death the next job
starts a new one. The kernel's out-of-memory killer takes it before the server (oom_score_adj 1000).

Messages over the pipe: parent -> process ("run", job id, resume) | ("cancel", job id) | ("stop",); process ->
parent ("ready", Capacity) | ("done", job id)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from af2jobs import errors, memory
from af2jobs.memory import Capacity
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

START_S = 600.0  # JAX's start and the first GPU contact; a cold machine can take minutes
CANCEL_GRACE_S = 5.0  # how long a cancelled prediction may take to stop by itself before its process is killed
STOP_S = 30.0
POLL_S = 0.1


@dataclass(frozen=True)
class Ended:
    finished: bool  # the pass ran to its end: its outcome (SUCCEEDED, FAILED, CANCELLED, left) is on the record
    exitcode: int | None = None  # the process's, when it died (negative: killed by that signal)
    peak_bytes: int | None = None  # its peak resident memory, as last seen
    killed_for_cancel: bool = False
    over_limit: int | None = None  # AF2_PREDICTION_MEMORY_GB in bytes, when the process went past it

    def cause(self) -> str:
        if self.over_limit is not None:
            return (f"used more than AF2_PREDICTION_MEMORY_GB ({memory.gib(self.over_limit)}) and was stopped before "
                    "it could take the machine's memory")
        if self.exitcode is not None and self.exitcode < 0:
            import signal

            try:
                name = signal.Signals(-self.exitcode).name
            except ValueError:
                name = f"signal {-self.exitcode}"
            return f"was killed ({name})" + (", most likely by the kernel for want of memory"
                                             if -self.exitcode == signal.SIGKILL else "")
        return f"exited with status {self.exitcode}"


def _clear_peak(pid: int) -> None:
    """Reset the process's peak resident memory (VmHWM) to what it holds now (Linux: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def _vm(pid: int, field: str) -> int | None:
    return memory.proc_bytes(f"/proc/{pid}/status", field)


class PredictionProcess:
    """One slot's prediction process (see the module docstring). Used by that slot's thread alone, but for
    cancel(), which any thread may call."""

    def __init__(self, settings: Settings, overrides: Mapping[str, Any] | None, slot: str | None, *,
                 host: Callable[..., Any], jax_platforms: str = "", stages: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.slot = slot
        self.jax_platforms = jax_platforms  # JAX_PLATFORMS as the server had it before keeping itself off the GPU
        self.stages = stages  # a picklable factory of the process's StageRunner (tests); None: the pipeline
        # host(settings, overrides, stages) -> the Worker that predicts in the process (picklable: the process is
        # spawned): worker.slot_host with the parts it is wired to
        self.host = host
        self.info: Capacity | None = None  # what it runs on, once started
        self.on_ready: Callable[[Capacity], None] = lambda info: None  # told at each start
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._running: str | None = None
        self._kill_at: float | None = None

    # -- life ------------------------------------------------------------------------------------------------

    def start(self) -> Capacity:
        """A running process (a new one if there is none or it died) and what it runs on."""
        if self._proc is not None and self._proc.is_alive():
            return self.info
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no lock or JAX state inherited
        parent, child = context.Pipe()
        proc = context.Process(target=_main, name=f"af2-predict-{self.slot or 0}", daemon=True,
                               args=(child, self.settings, self.overrides, self.slot, self.jax_platforms,
                                     self.stages, self.host))
        proc.start()
        child.close()
        try:
            if not parent.poll(START_S):
                raise errors.ConfigurationError(f"the prediction process of GPU slot {self.slot or 0} did not start "
                                                f"within {START_S:.0f} s")
            try:
                kind, info = parent.recv()
            except (EOFError, OSError):
                proc.join(5)
                raise errors.ConfigurationError(f"the prediction process of GPU slot {self.slot or 0} died at start "
                                                f"(exit status {proc.exitcode}); see the server's log") from None
            if kind == "error":
                raise errors.ConfigurationError(info)
        except BaseException:
            parent.close()
            proc.kill()
            proc.join(5)
            raise
        self._proc, self._conn, self.info = proc, parent, info
        self.on_ready(info)
        log.info("prediction process %d of slot %s: %s, %s", proc.pid, self.slot or 0, info.backend,
                 info.describe())
        return info

    def close(self, timeout: float = STOP_S) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            self._conn.send(("stop",))
        except (OSError, ValueError):
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        self._gone()

    def _gone(self) -> None:
        """The process has ended: its end of the pipe is closed, and the next start makes a new one."""
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    # -- one job ---------------------------------------------------------------------------------------------

    def run(self, job_id: str, resume: bool) -> Ended:
        """The job's predict phase in the process; returns when it finished or the process died."""
        self.start()
        proc, conn = self._proc, self._conn
        with self._lock:
            self._running, self._kill_at = job_id, None
        peak: int | None = None
        limit = None  # on a CPU the process's own memory is the prediction's: held to the setting, if set
        if self.settings.prediction_memory_gb is not None and self.info.backend != "gpu":
            limit = int(self.settings.prediction_memory_gb * memory.GIB)
        over = False
        try:
            _clear_peak(proc.pid)  # the peak this job reaches, not an earlier job's
            conn.send(("run", job_id, resume))
            while True:
                if conn.poll(POLL_S):
                    try:
                        kind, done = conn.recv()
                    except (EOFError, OSError):
                        proc.join(POLL_S)  # its end of the pipe closed: it is dying, is_alive() says so below
                    else:
                        if kind == "done" and done == job_id:
                            return Ended(True)
                peak = _vm(proc.pid, "VmHWM") or peak
                with self._lock:
                    kill = self._kill_at is not None and time.monotonic() >= self._kill_at
                if kill and proc.is_alive():
                    log.warning("job %s: its prediction did not stop within %.0f s of the cancel; killing its "
                                "process", job_id, CANCEL_GRACE_S, extra={"job_id": job_id})
                    proc.kill()
                if limit is not None and (_vm(proc.pid, "VmRSS") or 0) > limit and proc.is_alive():
                    log.warning("job %s: its prediction process went past AF2_PREDICTION_MEMORY_GB; killing it",
                                job_id, extra={"job_id": job_id})
                    over = True
                    proc.kill()
                if not proc.is_alive():
                    proc.join(5)
                    self._gone()
                    return Ended(False, proc.exitcode, peak, killed_for_cancel=kill,
                                 over_limit=limit if over else None)
        finally:
            with self._lock:
                self._running, self._kill_at = None, None

    def request_stop(self) -> None:
        """Ask the process to stop (a shutdown): its running pass is left for the next start, then it exits."""
        conn = self._conn
        if conn is not None and self._proc is not None:
            try:
                conn.send(("stop",))
            except (OSError, ValueError):
                pass

    def cancel(self, job_id: str) -> bool:
        """Ask the running prediction of `job_id` to stop, and arm the kill; False if it does not run here."""
        with self._lock:
            if self._running != job_id:
                return False
            if self._kill_at is None:  # a cancel asked again does not put the kill off
                self._kill_at = time.monotonic() + CANCEL_GRACE_S
            conn = self._conn
        try:
            conn.send(("cancel", job_id))
        except (OSError, ValueError):
            pass  # it is dying: run() sees it
        return True


_PLATFORMS_BEFORE: list[str] = []
_MMSEQS_GPU_SET: list[bool] = []  # keep_off_the_gpu set AF2_MMSEQS_GPU (restore_platforms takes it back)


def restore_platforms() -> None:
    """JAX_PLATFORMS as it was before keep_off_the_gpu (a stopped worker; JAX's backends, once up, stay), and
    AF2_MMSEQS_GPU unset again if it set it."""
    if _MMSEQS_GPU_SET:
        _MMSEQS_GPU_SET.clear()
        os.environ.pop("AF2_MMSEQS_GPU", None)
    if _PLATFORMS_BEFORE:
        before = _PLATFORMS_BEFORE.pop()
        if before:
            os.environ["JAX_PLATFORMS"] = before
        else:
            os.environ.pop("JAX_PLATFORMS", None)


def keep_off_the_gpu() -> str:
    """Keep this process's JAX (the server's: its MSA stages make features on the CPU) off the GPUs, which the
    slots' processes take; returns JAX_PLATFORMS as it was before, which they get. Once JAX has started its
    backends in this process nothing changes (a test's process, on the CPU anyway)."""
    if not _PLATFORMS_BEFORE:
        _PLATFORMS_BEFORE.append(os.environ.get("JAX_PLATFORMS", ""))
    os.environ["JAX_PLATFORMS"] = "cpu"
    # The server's MSA stages search with MMseqs2 on the CPU too: on the GPU it would take memory the slots'
    # predictions were admitted for. AF2_MMSEQS_GPU=1 lets it share the GPU.
    if "AF2_MMSEQS_GPU" not in os.environ:
        os.environ["AF2_MMSEQS_GPU"] = "0"
        _MMSEQS_GPU_SET.append(True)
    jax = sys.modules.get("jax")
    if jax is not None:
        try:
            jax.config.update("jax_platforms", "cpu")
        except Exception:  # noqa: BLE001 - its backends are up already: it stays as it is
            pass
    return _PLATFORMS_BEFORE[0]


# ---------------------------------------------------------------------------------------------------------------
# The process's side

def _environment(slot: str | None, jax_platforms: str) -> None:
    """The process's GPU (the slot's alone) and JAX's platforms as they were before the server kept itself off
    the GPU; then the kernel's OOM killer is told to take this process first."""
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
    if jax_platforms:
        os.environ["JAX_PLATFORMS"] = jax_platforms
    else:
        os.environ.pop("JAX_PLATFORMS", None)
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


def slot_info(stages: Any, settings: Settings) -> Capacity:
    """What predictions with `stages` run on, the memory one may use capped by AF2_PREDICTION_MEMORY_GB."""
    return Capacity.of(*stages.capacity(), settings.prediction_memory_gb)


def _main(conn: Any, settings: Settings, overrides: dict, slot: str | None, jax_platforms: str,
          stages: Callable[[], Any] | None, host: Callable[..., Any]) -> None:
    _environment(slot, jax_platforms)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s [predict]: %(message)s")
    worker = host(settings, overrides, stages() if stages is not None else None)
    info = slot_info(worker.stages, settings)
    if slot is not None and info.backend != "gpu":  # CUDA_VISIBLE_DEVICES named no GPU: JAX fell back to the CPU
        conn.send(("error", f"AF2_GPUS (--gpus) names GPU {slot}, and its prediction process sees no GPU there "
                            f"(JAX runs on {info.backend})"))
        os._exit(1)
    conn.send(("ready", info))
    running: threading.Thread | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: so is what it asked for
        if message[0] == "run":
            _, job_id, resume = message
            if running is not None:
                running.join()

            def predict(job_id: str = job_id, resume: bool = resume) -> None:
                try:
                    worker.predict_here(job_id, resume)
                finally:
                    conn.send(("done", job_id))

            running = threading.Thread(target=predict, name=f"predict-{job_id[:8]}", daemon=True)
            running.start()
        elif message[0] == "cancel":
            worker.signal_cancel(message[1])
        elif message[0] == "stop":
            worker.stop(timeout=STOP_S / 2)
            if running is not None:
                running.join(STOP_S / 2)
            os._exit(0)


__all__ = ["CANCEL_GRACE_S", "START_S", "Ended", "PredictionProcess", "keep_off_the_gpu", "restore_platforms",
           "slot_info"]
