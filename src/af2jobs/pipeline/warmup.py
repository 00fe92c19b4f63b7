"""Making predictions ready ahead of them, beside the GPU's work: compiled applies loaded from the executable cache
(or compiled) by a few background threads, for a job's next records and a record's later configurations."""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable

import jax

from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline.compiled import Compiled
from af2jobs.pipeline.devices import on_device
from af2jobs.pipeline.inputs import ModelInputs
from af2jobs.runconfig import RunConfig

log = logging.getLogger(__name__)


def warm_ahead() -> bool:
    """Whether compiling and loading ahead, beside the predictions, gains anything: only where the model runs on
    an accelerator; on the CPU both would take the same cores."""
    return jax.default_backend() != "cpu"


def load_configs(run: RunConfig, inputs: ModelInputs, raw: dict, models: list[str]) -> None:
    """The compiled apply of each of these models' configurations, loaded or compiled (once per configuration:
    Compiled shares it)."""
    for name in models:
        cfg = params_mod.runtime_config(name, run)
        fingerprint = params_mod.config_fingerprint(cfg)
        Compiled.get(cfg, fingerprint, inputs.processed(run, cfg, fingerprint, raw), params_mod.param_shapes_for(cfg))


def load_later_configs(run: RunConfig, inputs: ModelInputs, raw: dict, tasks: list[tuple[str, int]]) -> None:
    """The compiled applies of the configurations after the first (models 3-5, apart from models 1-2's)
    loaded or compiled in a thread while the first runs; their features are made here, first. The thread
    touches nothing of the prediction; what fails there is logged and left for the run that needs it."""
    configs = {}
    for m, _ in tasks:
        cfg = params_mod.runtime_config(m, run)
        configs.setdefault(params_mod.config_fingerprint(cfg), cfg)
    later = [(cfg, fp, inputs.processed(run, cfg, fp, raw)) for fp, cfg in list(configs.items())[1:]]
    if not later:
        return

    def load() -> None:
        try:
            for cfg, fp, feat in later:
                Compiled.get(cfg, fp, feat, params_mod.param_shapes_for(cfg))
        except Exception as exc:  # noqa: BLE001 - the run that needs it loads or compiles it again
            log.warning("loading a compiled model ahead failed (%s: %s)", type(exc).__name__, exc)

    threading.Thread(target=on_device, args=(jax.config.jax_default_device, load), daemon=True,
                     name="predict-configs").start()


def in_background(make_ready: Callable[[], object], should_cancel: Callable[[], bool] = lambda: False) -> None:
    """make_ready() queued for the warm-up threads (on the caller's default device) and returned from at once;
    dropped if the job is cancelled before its turn. A failure there is logged and left for the prediction itself
    to meet. Nothing is queued where the model runs on the CPU (warm_ahead)."""
    if not warm_ahead():
        return
    device = jax.config.jax_default_device

    def work() -> None:
        try:
            if should_cancel():
                return
            on_device(device, make_ready)
        except Exception as exc:  # noqa: BLE001 - the prediction does it again, and reports what fails
            log.warning("making a prediction ready ahead failed (%s: %s); it is done in its turn",
                        type(exc).__name__, exc)

    _warmers.submit(work)


# Compiles at once on the machine's CPUs: tracing holds the interpreter, XLA's compile does not, and each compile
# takes a few GB of memory (a 4-vCPU GPU instance compiles one at a time).
WARM_THREADS = max(1, min(4, (os.cpu_count() or 1) // 4))


class _Warmers:
    """A few daemon threads that make predictions ready ahead of them, in the order asked: a job's records have
    their compiled applies loaded from the executable cache, or compiled, while the GPU predicts the first ones."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._queue.put(work)
            if len(self._threads) < WARM_THREADS:
                thread = threading.Thread(target=self._serve, name=f"predict-warm-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        while True:
            work = self._queue.get()
            try:
                work()
            except BaseException:  # noqa: BLE001 - a warm-up is only a head start; the thread serves the next
                log.exception("a warm-up failed")
            finally:
                self._queue.task_done()

    def wait(self) -> None:
        """Until every warm-up queued so far has run."""
        self._queue.join()


_warmers = _Warmers()
