"""Inference stage: the AlphaFold2 model (alphafold-colabfold, JAX, haiku) under a selection strategy.

Models whose runtime configuration is the same (models 1 and 2, which use templates; models 3, 4 and 5) share one
compiled function: parameters are arguments of the jitted apply, not constants baked into it. The compile is done
ahead of time so its cost is measured apart from the run. A new process pays it once: the compiled executable is
kept on disk (ExecutableCache, in place of JAX's persistent compilation cache), so a later process loads it
without tracing the model again (tracing AlphaFold through haiku takes seconds per function, which JAX's own cache
does not save).

The strategies are here, readable top to bottom (Predictor); what they draw on has a room of its own: compiled.py
(compiled executables and their cache), inputs.py (the input pipeline, a prediction's processed features),
recycling.py (one run's recycling loop), keys.py (its random keys), devices.py (where the model runs and what is
kept there), warmup.py (making predictions ready ahead) and results.py (ModelRun, Prediction).

Strategies:
  all               every requested model with full recycling, ranked (AlphaFold's and the seed's default)
  best              every model screened without recycling, then only the winner with full recycling
  stop-at-score:X   models in order with full recycling until one reaches score X

For a complex (model_preset multimer) each model makes `num_multimer_predictions_per_model` predictions, one per
seed (model_1_multimer_v3_pred_0 ...), ranked by AlphaFold-Multimer's 0.8 ipTM + 0.2 pTM; the strategies treat
each model x seed as a model (best screens all of them and recycles the winner in full).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable

import jax

from af2jobs.errors import CancelledError
from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline import warmup
from af2jobs.pipeline.compiled import Compiled
from af2jobs.pipeline.devices import device_name, device_params, winner_device
from af2jobs.pipeline.inputs import ModelInputs, crop_result, feature_length, run_for
from af2jobs.pipeline.recycling import recycle
from af2jobs.pipeline.results import ModelRun, Prediction
from af2jobs.runconfig import RunConfig

Progress = Callable[[str, dict], None]


class Predictor:
    """One record's prediction under the run's strategy: predict(raw) runs the models and ranks them."""

    def __init__(
        self,
        run: RunConfig,
        provider: params_mod.ParamsProvider,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
        inputs_dir: Path | None = None,
    ) -> None:
        self.run = run
        self.provider = provider
        self.progress = progress or (lambda event, details: None)
        self.should_cancel = should_cancel or (lambda: False)
        self.inputs = ModelInputs(inputs_dir)  # inputs_dir: what the CPU stage prepared (prepare_inputs), if it did

    @property
    def inputs_used(self) -> list[str]:
        """The files of inputs_dir read: the processed features the CPU stage prepared."""
        return self.inputs.used

    def predict(self, raw: dict) -> Prediction:
        requested = self.run
        self.run = run_for(requested, raw)
        try:
            return self._predict(raw)
        finally:
            self.run = requested
            self.inputs.release_devices()  # the device memory of the features goes with the prediction

    def _predict(self, raw: dict) -> Prediction:
        kind, threshold = self.run.strategy_kind, self.run.stop_threshold
        tasks = self._tasks()
        # The next models' parameters are read from disk while the first runs, and the later configurations'
        # compiled applies loaded (models 3-5 share one, apart from models 1-2's): a failure there is left for
        # the run that needs it to raise.
        self.provider.preload(list(dict.fromkeys(self.run.variant(m) for m, _ in tasks)), self.run.profile)
        if kind != "stop-at-score" and warmup.warm_ahead():  # stop-at-score may never need the later configurations
            warmup.load_later_configs(self.run, self.inputs, raw, tasks)
        runs: list[ModelRun] = []
        full: list[ModelRun] = []
        devices = self._devices()
        if kind == "best" and len(tasks) > 1:
            if len(devices) > 1:  # the screens shared across the job's devices; only the winner's state is kept
                runs = self._run_on_devices(tasks, raw, devices, phase="screen")
                winner = max(runs, key=lambda r: r.ranking_confidence)
                for r in runs:
                    if r is not winner:
                        r.state = None
            else:
                for m, seed_index in tasks:
                    screen = self.run_model(m, raw, "screen", seed_index=seed_index)
                    # Keep only the leader's recycling state on the device (ties go to the first, as max() does).
                    leader = max(runs, key=lambda r: r.ranking_confidence) if runs else None
                    if leader is not None and screen.ranking_confidence <= leader.ranking_confidence:
                        screen.state = None
                    elif leader is not None:
                        leader.state = None
                    runs.append(screen)
                winner = max(runs, key=lambda r: r.ranking_confidence)
            # The screen is the winner's first recycling iteration: its full run goes on from there. Without
            # recycling the screen already is the full run.
            if self.run.num_recycle == 0:
                full = [winner]
            else:
                device = winner_device(winner, devices)  # None: the thread's own default device stays
                with jax.default_device(device) if device is not None else contextlib.nullcontext():
                    full = [self.run_model(winner.base_model, raw, "full", winner, seed_index=winner.seed_index)]
            for r in runs:
                r.state = None  # free the device memory of the screens' recycling state
        elif kind == "all" and len(devices) > 1:
            full = self._run_on_devices(tasks, raw, devices)
        else:
            for m, seed_index in tasks:
                full.append(self.run_model(m, raw, "full", seed_index=seed_index))
                if kind == "stop-at-score" and full[-1].ranking_confidence >= threshold:
                    break
        runs += [r for r in full if r not in runs]
        ranked = sorted(full, key=lambda r: r.ranking_confidence, reverse=True)
        cfg = params_mod.runtime_config(ranked[0].base_model, self.run)
        fingerprint = params_mod.config_fingerprint(cfg)
        return Prediction(
            ranked=ranked, runs=runs, features=self.inputs.processed(self.run, cfg, fingerprint, raw),
            strategy=self.run.strategy, config_fingerprint=fingerprint,
            msa_caps=(self.run.max_msa_clusters, self.run.max_extra_msa),
        )

    def warm(self, raw: dict) -> float:
        """What predict(raw) will need, made ready ahead of it (a job's next record, while the GPU predicts this
        one): the parameters read in the background, and each configuration's compiled apply loaded from the
        executable cache, or compiled. Returns the seconds spent here."""
        t0 = time.perf_counter()
        requested = self.run
        self.run = run_for(requested, raw)
        try:
            self.provider.preload(list(dict.fromkeys(self.run.variant(m) for m, _ in self._tasks())), self.run.profile)
            warmup.load_configs(self.run, self.inputs, raw, list(dict.fromkeys(m for m, _ in self._tasks())))
        finally:
            self.run = requested
        return time.perf_counter() - t0

    def _tasks(self) -> list[tuple[str, int]]:
        """(model, seed index) of every prediction to make, in AlphaFold's order (model by model, seed by seed)."""
        return [(m, i) for m in self.run.model_names for i in range(self.run.seeds)]

    def _devices(self) -> list:
        """The devices this prediction may use: the first `gpus` JAX sees (a Batch job sees only its own)."""
        if self.run.gpus <= 1:
            return [None]
        return jax.local_devices()[: self.run.gpus]

    def run_model(self, name: str, raw: dict, phase: str, resume: ModelRun | None = None,
                  seed_index: int = 0) -> ModelRun:
        """One model's prediction (for a complex, its seed_index-th); `resume` (its own screen) makes the full run
        go on from the screen's state."""
        self._check_cancel()
        cfg = params_mod.runtime_config(name, self.run)
        fingerprint = params_mod.config_fingerprint(cfg)
        feat = self.inputs.processed(self.run, cfg, fingerprint, raw)
        model_index = list(self.run.model_names).index(name) if name in self.run.model_names else 0
        seed = self.run.seed_of(model_index, seed_index)
        label = self.run.prediction_name(name, seed_index)
        shapes = params_mod.param_shapes_for(cfg)
        # The compiled apply is loaded (or compiled) while the parameters are read (Predictor.predict's preload).
        entry, compile_s = Compiled.get(cfg, fingerprint, feat, shapes)
        t0 = time.perf_counter()
        all_params, identity = self.provider.get(self.run.variant(name), self.run.profile)
        params = device_params(identity, params_mod.select(all_params, shapes))
        params_s = time.perf_counter() - t0
        # Parameters stored in other dtypes than their shapes say: the apply is compiled for those.
        if params_mod.param_signature(params) != params_mod.param_signature(shapes):
            entry, more = Compiled.get(cfg, fingerprint, feat, params)
            compile_s += more
        self.progress("model_start", {"model": label, "phase": phase, "compile_s": compile_s})

        def on_recycle(result, r):
            self.progress("recycle", {"model": label, "phase": phase, "recycle": r})
            self._check_cancel()

        # A screen's large outputs are not kept, unless without recycling the winning screen is the result.
        keep_large = phase == "full" or self.run.num_recycle == 0
        with entry.lock:
            entry.runner.params = params
            t0 = time.perf_counter()
            device_feat = self.inputs.on_this_device(cfg, fingerprint, feat)
            iterations = 1 if phase == "screen" else self.run.num_recycle + 1
            start, state = (1, resume.state) if resume is not None else (0, None)
            try:
                result, recycles, state = recycle(entry.runner, device_feat, seed, iterations, start,
                                                  state, on_recycle, keep_large)
            finally:
                entry.runner.params = None  # device_params keeps what is kept; a runner holds none between runs
            run_s = time.perf_counter() - t0
        result = crop_result(result, feature_length(raw))
        ptm = float(result["ptm"]) if "ptm" in result else None
        model_run = ModelRun(
            model=label, phase=phase, recycles=int(recycles), params_s=params_s, compile_s=compile_s, run_s=run_s,
            ranking_confidence=float(result["ranking_confidence"]), mean_plddt=float(result["mean_plddt"]),
            ptm=ptm, params=identity, result=result, state=state if phase == "screen" else None,
            device=device_name(), base_model=name, seed_index=seed_index, seed=seed,
            iptm=float(result["iptm"]) if "iptm" in result else None,
        )
        self.progress("model_done", model_run.summary())
        return model_run

    def _run_on_devices(self, tasks: list[tuple[str, int]], raw: dict, devices: list,
                        phase: str = "full") -> list[ModelRun]:
        """Runs of every (model, seed), one thread per device, each taking the next when its device is free.

        Each device gets its own compiled function (the compile cache is keyed by device); the features are
        processed once, before the threads start. A failure or a cancel stops the others at their next recycle.
        """
        for m in {m for m, _ in tasks}:
            cfg = params_mod.runtime_config(m, self.run)
            self.inputs.processed(self.run, cfg, params_mod.config_fingerprint(cfg), raw)
        pending = list(enumerate(tasks))
        done: dict[int, ModelRun] = {}
        lock = threading.Lock()
        failed = threading.Event()
        progress, should_cancel = self.progress, self.should_cancel

        def serial_progress(event: str, details: dict) -> None:
            with lock:
                progress(event, details)

        def device_loop(device) -> None:
            with jax.default_device(device):
                while not failed.is_set():
                    with lock:
                        if not pending:
                            return
                        i, (name, seed_index) = pending.pop(0)
                    try:
                        run = self.run_model(name, raw, phase, seed_index=seed_index)
                    except BaseException:
                        failed.set()
                        raise
                    with lock:
                        done[i] = run

        self.progress = serial_progress
        self.should_cancel = lambda: failed.is_set() or should_cancel()
        try:
            threads = [_Thread(device_loop, d) for d in devices[: len(tasks)]]
            for t in threads:
                t.join()
        finally:
            self.progress, self.should_cancel = progress, should_cancel
        errors_ = [t.error for t in threads if t.error is not None]
        # A thread stopped by another's failure raises CancelledError: report the failure that stopped them.
        first = next((e for e in errors_ if not isinstance(e, CancelledError)), errors_[0] if errors_ else None)
        if first is not None:
            if should_cancel():
                raise CancelledError("the job was cancelled during prediction")
            raise first
        return [done[i] for i in sorted(done)]

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise CancelledError("the job was cancelled during prediction")


def warm_in_background(load_raw: Callable[[], dict], run: RunConfig, provider: params_mod.ParamsProvider,
                       inputs_dir: Path | None = None, should_cancel: Callable[[], bool] = lambda: False) -> None:
    """Predictor.warm of the features load_raw() returns, queued for the warm-up threads (warmup.in_background) and
    returned from at once; nothing is queued where the model runs on the CPU."""
    warmup.in_background(lambda: Predictor(run, provider, inputs_dir=inputs_dir).warm(load_raw()), should_cancel)


class _Thread(threading.Thread):
    """A thread that keeps the exception its target raised, for the caller to raise after join()."""

    def __init__(self, target: Callable, *args) -> None:
        super().__init__(target=target, args=args, daemon=True)
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # noqa: BLE001 - handed to the joining thread
            self.error = exc
