"""Inference stage: the AlphaFold2 model (alphafold-colabfold, JAX, haiku) under a selection strategy.

Models whose runtime configuration is the same (models 1 and 2, which use templates; models 3, 4 and 5) share one
compiled function: parameters are arguments of the jitted apply, not constants baked into it. The compile is done
ahead of time so its cost is measured apart from the run. A new process pays it once: the compiled executable is
kept on disk (ExecutableCache, in place of JAX's persistent compilation cache), so a later process loads it
without tracing the model again (tracing AlphaFold through haiku takes seconds per function, which JAX's own cache
does not save).

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
import copy
import hashlib
import json
import logging
import os
import pickle
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from alphafold.model import features as af_features
from alphafold.model import model as af_model
from alphafold.model.tf import input_pipeline, proteins_dataset
from alphafold.model.tf import np_backend as np_tf

from af2jobs import memory
from af2jobs.errors import CancelledError
from af2jobs.pipeline import params as params_mod
from af2jobs.runconfig import RunConfig, bucket_length

Progress = Callable[[str, dict], None]
log = logging.getLogger(__name__)


def enable_compilation_cache(directory: Path) -> None:
    """A compile done once is reused by every later process (a new Batch job, a restarted server): the model's
    compiled executables and its parameter shapes are kept in `directory`.

    JAX's own persistent cache is switched off: it saves the compile but not the trace, and an executable it
    hands back cannot always be serialised again (XLA:CPU's loses its code), so it would spoil this cache."""
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", False)
    _Compiled.disk = ExecutableCache(directory / "executables")
    params_mod.remember_shapes(directory / "param-shapes")


def _jax_cache_in_use() -> bool:
    """Whether JAX's own persistent cache serves this process's compiles (it decides once, at the first)."""
    try:
        from jax._src import compilation_cache

        return bool(compilation_cache._cache_checked and compilation_cache._cache_used)
    except (ImportError, AttributeError):  # another jax: assume the worst, keep nothing
        return True


def _versions() -> dict:
    """What, besides the configuration and the shapes, decides the code a trace and a compile make."""
    return {dist: params_mod.package_version(dist) for dist in
            ("alphafold-colabfold", "colabfold-kernels", "colabfold-cuda-kernels", "colabfold-legacy-kernels")}


class ExecutableCache:
    """Compiled applies on disk, loaded by later processes without tracing: one file per key (configuration
    fingerprint, feature shapes, parameter shapes, device kind, the versions of jax, jaxlib and the model code, the
    XLA flags). A file that cannot be loaded (another jaxlib wrote it, it was cut short) is compiled again and
    replaced; writes are atomic. Files here are loaded as code: the folder must be as trusted as JAX's own cache."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._static: dict | None = None

    def key(self, fingerprint: str, shapes: tuple, params: dict, device) -> str:
        if self._static is None:
            import jaxlib

            self._static = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, **_versions(),
                            "xla_flags": os.environ.get("XLA_FLAGS", ""), "x64": bool(jax.config.jax_enable_x64),
                            "precision": str(jax.config.jax_default_matmul_precision)}
        param_shapes = sorted((f"{scope}//{name}", tuple(v.shape), str(v.dtype))
                              for scope, d in params.items() for name, v in d.items())
        text = json.dumps({**self._static, "fingerprint": fingerprint, "features": [list(map(str, s)) for s in shapes],
                           "params": [list(map(str, s)) for s in param_shapes], "platform": device.platform,
                           "device": device.id, "device_kind": getattr(device, "device_kind", ""),
                           "platform_version": getattr(device.client, "platform_version", "")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"apply-{key}.xla"

    def load(self, key: str, device):
        from jax.experimental import serialize_executable

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as fh:
                payload, in_tree, out_tree = pickle.load(fh)
            return serialize_executable.deserialize_and_load(payload, in_tree, out_tree,
                                                             backend=device.client, execution_devices=[device])
        except Exception as exc:  # noqa: BLE001 - any unreadable file means: compile again, write it anew
            log.warning("compiled executable %s not loaded (%s: %s); compiling again", path.name,
                        type(exc).__name__, exc)
            return None

    def store(self, key: str, compiled) -> None:
        from jax.experimental import serialize_executable

        from af2jobs import atomic

        if _jax_cache_in_use():  # the compile may be JAX's cache's copy, which need not serialise whole
            log.info("JAX's persistent cache is in use in this process: compiled executable not kept")
            return
        try:
            data = pickle.dumps(serialize_executable.serialize(compiled), protocol=4)
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(self.path(key), data)
        except Exception as exc:  # noqa: BLE001 - whatever stops the write, the run goes on; the next process compiles
            log.warning("compiled executable not kept (%s: %s)", type(exc).__name__, exc)


def device_kind() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', '')}"


def memory_capacity() -> tuple[str, str, int | None]:
    """(backend, device kind, bytes) one prediction may use here: the GPU's memory as XLA may take it (with
    AF2_UNIFIED_MEMORY, what it may spill too; None where the device does not say), or this machine's less
    memory.HOST_RESERVE for the rest of it."""
    device = _current_device()
    if device.platform == "gpu":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        return "gpu", str(getattr(device, "device_kind", "gpu")), int(limit) if limit else None
    return device.platform, device.platform, max(memory.host_bytes() - memory.HOST_RESERVE, 0)


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


@dataclass(eq=False)
class ModelRun:
    model: str  # the prediction's name: model_1, or model_1_multimer_v3_pred_0 for a complex
    phase: str  # "screen" (no recycling) | "full"
    recycles: int
    params_s: float  # loading (or generating, the first time) the parameters
    compile_s: float
    run_s: float
    ranking_confidence: float
    mean_plddt: float
    ptm: float | None
    params: params_mod.ParamsIdentity
    result: dict = field(repr=False)
    # The recycling state after the last iteration (on the device), so a screen can go on as the full run.
    state: dict | None = field(default=None, repr=False)
    device: str = ""
    base_model: str = ""  # model_1 ... model_5 (the request's name of the model)
    seed_index: int = 0  # which of the model's predictions (a complex's seeds)
    seed: int = 0  # the random seed it ran with
    iptm: float | None = None  # a complex's interface pTM

    def summary(self) -> dict:
        out = {
            "model": self.model, "phase": self.phase, "recycles": self.recycles, "device": self.device,
            "params_s": round(self.params_s, 3), "compile_s": round(self.compile_s, 3), "run_s": round(self.run_s, 3),
            "ranking_confidence": round(self.ranking_confidence, 4), "mean_plddt": round(self.mean_plddt, 4),
            "ptm": None if self.ptm is None else round(self.ptm, 4), "params": self.params.source,
        }
        if self.iptm is not None:
            out.update(iptm=round(self.iptm, 4), seed=self.seed)
        return out


@dataclass
class Prediction:
    ranked: list[ModelRun]  # best first: the models run with full recycling
    runs: list[ModelRun]  # every run in order, screens included
    features: dict  # processed features of the ranked models' configuration
    strategy: str
    config_fingerprint: str
    msa_caps: tuple[int, int] = (0, 0)  # the cluster and extra-MSA rows it ran with (RunConfig.fitted_to)


def run_for(run: RunConfig, raw: dict) -> RunConfig:
    """The run a monomer's features are processed and predicted with: its MSA caps fitted to the MSA's rows."""
    if run.multimer or "msa" not in raw:
        return run
    return run.fitted_to(int(raw["msa"].shape[0]))


class _Compiled:
    """One runner and its compiled apply per (configuration, feature shapes), shared across models and jobs: the
    KEPT most recently used in memory (a process that predicts for days meets many lengths; the files on disk keep
    the rest)."""

    KEPT = 8
    _cache: dict[tuple, "_Compiled"] = {}
    _lock = threading.Lock()  # guards _cache and _making
    _making: dict[tuple, threading.Lock] = {}  # one per key: a load or compile of one does not hold up the others
    disk: ExecutableCache | None = None  # set by enable_compilation_cache

    def __init__(self, runner: af_model.RunModel, compiled, compile_s: float) -> None:
        self.runner = runner
        self.compiled = compiled
        self.compile_s = compile_s
        self.lock = threading.Lock()  # one prediction at a time per runner (it holds the params being used)

    @classmethod
    def get(cls, cfg, fingerprint: str, feat: dict, params: dict) -> tuple["_Compiled", float]:
        """The compiled apply for these features' and parameters' shapes (`params` may be jax.ShapeDtypeStruct
        leaves: Predictor.warm loads or compiles ahead of the parameters). Another thread may be predicting with
        another entry meanwhile."""
        shapes = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in feat.items()))
        # The device too: each GPU slot of the local worker runs under its own jax.default_device.
        key = (fingerprint, shapes, _param_signature(params), _device_name())
        with cls._lock:
            hit = cls._cache.pop(key, None)
            if hit is not None:
                cls._cache[key] = hit  # the most recently used last
                return hit, 0.0
            making = cls._making.setdefault(key, threading.Lock())
        with making:
            with cls._lock:
                hit = cls._cache.get(key)
            if hit is not None:  # made by the thread this one waited for: its cost was paid there
                return hit, 0.0
            runner = af_model.RunModel(copy.deepcopy(cfg))  # RunModel writes into its config
            t0 = time.perf_counter()
            device = _current_device()
            disk_key = cls.disk.key(fingerprint, shapes, params, device) if cls.disk is not None else None
            compiled = cls.disk.load(disk_key, device) if disk_key is not None else None
            if compiled is None:
                compiled = lower_and_compile(runner, params, _first_batch(cfg, feat))
                if disk_key is not None:
                    cls.disk.store(disk_key, compiled)
            entry = cls(runner, compiled, time.perf_counter() - t0)
            runner.apply = compiled
            with cls._lock:
                cls._cache[key] = entry
                for old in list(cls._cache)[: max(len(cls._cache) - cls.KEPT, 0)]:
                    del cls._cache[old]  # a run holding it keeps its runner until it ends
                    cls._making.pop(old, None)
            return entry, entry.compile_s


def _param_signature(params: dict) -> int:
    """What of the parameters a compiled apply is specialised to: every leaf's name, shape and dtype."""
    return hash(tuple(sorted((scope, name, tuple(v.shape), str(v.dtype))
                             for scope, d in params.items() for name, v in d.items())))


def lower_and_compile(runner: af_model.RunModel, params: dict, batch: dict):
    """Trace, lower and compile the model's apply for these arguments' shapes (what ExecutableCache saves a later
    process)."""
    return runner.apply.lower(params, np.zeros(2, np.uint32), batch).compile()


def _current_device():
    device = jax.config.jax_default_device
    return device if isinstance(device, jax.Device) else jax.devices()[0]


def _first_batch(cfg, feat: dict) -> dict:
    """The arguments apply sees in the first recycle: one ensemble slice (all of a complex's features) plus the
    zero recycling state."""
    multimer = params_mod.is_multimer(cfg)
    length = feat["aatype"].shape[0 if multimer else 1]
    prev = {
        "prev_msa_first_row": np.zeros([length, 256], np.float16),
        "prev_pair": np.zeros([length, length, 128], np.float16),
        "prev_pos": np.zeros([length, 37, 3], np.float16),
    }
    if multimer:
        return {**feat, "prev": prev}
    n = cfg.data.eval.num_ensemble
    return {**{k: v[:n] for k, v in feat.items()}, "prev": prev}


def feature_length(raw: dict) -> int:
    """The residues of the raw features: a monomer's seq_length is per residue, a complex's a scalar."""
    return int(np.ravel(raw["seq_length"])[0])


def process_features(cfg, raw: dict, random_seed: int, pad_to: int) -> dict:
    """AlphaFold's input pipeline (as RunModel.process_features) with the residue dimension padded to pad_to.

    The model masks padded residues (seq_mask) in attention, pLDDT means, pTM and the recycling tolerance, so the
    scores need no correction; crop_result cuts the per-residue outputs back to the sequence.
    """
    with params_mod.INPUT_PIPELINE:
        return _process_features(cfg, raw, random_seed, pad_to)


def _process_features(cfg, raw: dict, random_seed: int, pad_to: int) -> dict:
    cfg_data, names = af_features.make_data_config(cfg, num_res=pad_to)
    example = dict(raw)
    if "deletion_matrix_int" in example:
        example["deletion_matrix"] = example.pop("deletion_matrix_int").astype(np.float32)
    graph = np_tf.Graph()
    with graph.as_default(), np_tf.device("/device:CPU:0"):
        np_tf.compat.v1.set_random_seed(random_seed)
        tensors = proteins_dataset.np_to_tensor_dict(np_example=example, features=names)
        processed = input_pipeline.process_tensors_from_config(tensors, cfg_data)
    graph.finalize()
    with np_tf.Session(graph=graph) as session:
        out = session.run(processed)
    return {k: v for k, v in out.items() if v.dtype != "O"}


def inputs_name(cfg, random_seed: int, pad_to: int) -> str:
    """The file of one model configuration's processed features, named by what makes them: the data part of the
    configuration (the input pipeline reads no other; the model part differs between a CPU machine and a GPU,
    which adds its fused kernels), the seed and the padded length."""
    return f"inputs-{params_mod.config_fingerprint(cfg.data)}-{random_seed}-{pad_to}.pkl"


def prepare_inputs(run: RunConfig, raw: dict, out_dir: Path) -> list[str]:
    """AlphaFold's input pipeline for each distinct model configuration of a monomer run, written to out_dir for
    the GPU stage (Predictor(inputs_dir=...)), so that the GPU does not wait for it. Returns the files written."""
    from af2jobs import atomic

    length = feature_length(raw)
    pad_to = bucket_length(length) if run.length_buckets else length
    run = run_for(run, raw)
    written = []
    for name in dict.fromkeys(run.model_names):
        cfg = params_mod.runtime_config(name, run)
        file = inputs_name(cfg, run.random_seed, pad_to)
        if file in written:
            continue
        with atomic.replacing(out_dir / file) as fh:
            pickle.dump(process_features(cfg, raw, run.random_seed, pad_to), fh, protocol=4)
        written.append(file)
    return written


def crop_result(result: dict, length: int) -> dict:
    """Per-residue outputs of a padded run cut back to the sequence's own length (no-op when unpadded)."""

    def crop(key_path: tuple, value):
        arr = np.asarray(value)
        name = key_path[-1]
        if name in ("plddt", "final_atom_positions", "final_atom_mask") or key_path[0] in (
                "predicted_lddt", "experimentally_resolved"):
            return arr[:length]
        if name in ("predicted_aligned_error", "aligned_confidence_probs") or key_path[0] == "distogram" and \
                name == "logits":
            return arr[:length, :length]
        if key_path[0] == "masked_msa":
            return arr[:, :length]
        return arr

    def walk(node, path=()):
        if isinstance(node, dict):
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        return crop(path, node)

    return walk(result)


def _recycle(runner: af_model.RunModel, feat, seed: int, iterations: int, start: int, state: dict | None,
             on_recycle: Callable[[dict, int], None], keep_large: bool = True) -> tuple[dict, int, dict]:
    """RunModel.predict's recycling loop, able to start at iteration `start` from a saved state.

    `feat` is on the device already (Predictor._device_features, one copy per device): a complex's features, or a
    monomer's list of per-iteration slices (its ensemble slice for each recycle). The random key chain is
    replayed up to `start`, so going on from a screen gives exactly the iterations a run from scratch would have
    made. Without keep_large the outputs over 1 MiB (logits [L, L, 64], PAE) are left on the device and dropped.
    Nothing here compiles: the slices, keys and zero state are made without small JAX functions, which a new
    process (or a new length) would otherwise compile on the GPU before its first prediction.
    """
    cfg = runner.config
    multimer = params_mod.is_multimer(cfg)
    if state is None:
        state = zero_state(feat["aatype"].shape[0] if multimer else feat[0]["aatype"].shape[1])
    keys = key_chain(seed, iterations)
    result, r = None, start - 1
    for r in range(start, iterations):
        # A complex's model samples its MSA from the key each recycle; a monomer's features carry one slice each.
        batch = {**feat, "prev": state} if multimer else {**feat[r], "prev": state}
        result = runner.apply(runner.params, keys[r], batch)
        state = result.pop("prev")
        result = af_model._fetch_small(result)
        on_recycle(result, r)
        if result["ranking_confidence"] > cfg.model.stop_at_score:
            break
        if r > 0 and result["tol"] < cfg.model.recycle_early_stop_tolerance:
            break
    if not keep_large:
        result = _host_only(result)
    return jax.device_get(result), r, state


def _threefry2x32(k0: np.ndarray, k1: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """JAX's threefry2x32 hash (20 rounds) in numpy on uint32 arrays."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for rot in rotations[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(rot)) | (x1 >> np.uint32(32 - rot))) ^ x0
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _split(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """jax.random.split(key) of a raw threefry key, in numpy (both of JAX's counter layouts)."""
    k0, k1 = key[:1], key[1:]
    if getattr(jax.config, "jax_threefry_partitionable", True):  # JAX's default since 0.5
        b0, b1 = _threefry2x32(k0, k1, np.zeros(2, np.uint32), np.arange(2, dtype=np.uint32))
        return np.array([b0[0], b1[0]], np.uint32), np.array([b0[1], b1[1]], np.uint32)
    b0, b1 = _threefry2x32(k0, k1, np.arange(2, dtype=np.uint32), np.arange(2, 4, dtype=np.uint32))
    return b0, b1


def key_chain(seed: int, iterations: int) -> list:
    """The subkey of each recycling iteration, as RunModel.predict draws them (key, sub = split(key) each time),
    computed on the host. Falls back to jax.random outside what the numpy copy covers."""
    with np.errstate(over="ignore"):
        if getattr(jax.config, "jax_default_prng_impl", "") == "threefry2x32" and 0 <= seed < 2 ** 31 and \
                not getattr(jax.config, "jax_enable_custom_prng", False):
            key, out = np.array([0, seed], np.uint32), []
            for _ in range(iterations):
                key, sub = _split(key)
                out.append(sub)
            return out
    key, out = jax.random.PRNGKey(seed), []
    for _ in range(iterations):
        key, sub = jax.random.split(key)
        out.append(sub)
    return out


DEVICE_PARAMS_KEPT = memory.MODELS_KEPT  # models' parameters kept on each device (best and all use five)
_on_device_params: dict[tuple, dict] = {}  # (file, parameter signature, device) -> the tree on that device
_params_lock = threading.Lock()


def device_params(identity: params_mod.ParamsIdentity, params: dict) -> dict:
    """The parameters on this thread's device, moved there once and kept for the next screens, runs and records
    (the last DEVICE_PARAMS_KEPT models per device): a host tree handed to every execution is copied to the
    device each time."""
    device = _current_device()
    key = (identity.path, identity.sha256, _param_signature(params), f"{device.platform}:{device.id}")
    with _params_lock:
        if key in _on_device_params:
            _on_device_params[key] = _on_device_params.pop(key)  # the most recently used last
            return _on_device_params[key]
        same_device = [k for k in _on_device_params if k[3] == key[3]]
        for old in same_device[: max(len(same_device) - DEVICE_PARAMS_KEPT + 1, 0)]:
            del _on_device_params[old]
        _on_device_params[key] = jax.device_put(params, device)
        return _on_device_params[key]


_zeros: dict[tuple[int, str], dict] = {}  # the last length's zero state, per device
_zeros_lock = threading.Lock()


def zero_state(length: int) -> dict:
    """The first iteration's recycling state on this thread's device, made once per length from host zeros
    (no JAX function to compile) and kept for the next models (apply does not consume it)."""
    device = _current_device()
    key = (length, f"{device.platform}:{device.id}")
    with _zeros_lock:
        if key not in _zeros:
            for old in [k for k in _zeros if k[1] == key[1]]:
                del _zeros[old]
            _zeros[key] = jax.device_put({"prev_msa_first_row": np.zeros([length, 256], np.float16),
                                          "prev_pair": np.zeros([length, length, 128], np.float16),
                                          "prev_pos": np.zeros([length, 37, 3], np.float16)}, device)
        return _zeros[key]


def _host_only(tree):
    """The tree without the leaves still on the device (those _fetch_small left there)."""
    if isinstance(tree, dict):
        return {k: _host_only(v) for k, v in tree.items() if not isinstance(v, jax.Array)}
    return tree


def _device_name() -> str:
    device = _current_device()
    return f"{device.platform}:{device.id}"


def winner_device(winner: ModelRun, devices: list):
    """The device whose memory holds a screen's recycling state (None: the default device)."""
    if devices == [None] or not winner.device:
        return None
    return next((d for d in devices if f"{d.platform}:{d.id}" == winner.device), None)


def _on_device(device, fn: Callable, *args) -> None:
    """fn(*args) under this default device (a thread does not inherit its creator's jax.default_device)."""
    with jax.default_device(device):
        fn(*args)


def warm_ahead() -> bool:
    """Whether compiling and loading ahead, beside the predictions, gains anything: only where the model runs on
    an accelerator; on the CPU both would take the same cores."""
    return jax.default_backend() != "cpu"


def warm_in_background(load_raw: Callable[[], dict], run: RunConfig, provider: params_mod.ParamsProvider,
                       inputs_dir: Path | None = None, should_cancel: Callable[[], bool] = lambda: False) -> None:
    """Predictor.warm of the features load_raw() returns, queued for the warm-up threads (on the caller's default
    device) and returned from at once; dropped if the job is cancelled before its turn. A failure there is logged
    and left for the prediction itself to meet. Nothing is queued where the model runs on the CPU (warm_ahead)."""
    if not warm_ahead():
        return
    device = jax.config.jax_default_device

    def work() -> None:
        try:
            if should_cancel():
                return
            _on_device(device, lambda: Predictor(run, provider, inputs_dir=inputs_dir).warm(load_raw()))
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


class Predictor:
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
        self.inputs_dir = inputs_dir  # processed features the CPU stage prepared (prepare_inputs), when it did
        self.inputs_used: list[str] = []
        self._features: dict[str, dict] = {}
        self._on_device: dict[tuple[str, str], dict] = {}  # (fingerprint, device): the features, moved once

    def _check_cancel(self) -> None:
        if self.should_cancel():
            raise CancelledError("the job was cancelled during prediction")

    def _features_for(self, cfg, fingerprint: str, raw: dict) -> dict:
        if fingerprint not in self._features and params_mod.is_multimer(cfg):
            self._features[fingerprint] = params_mod.model_inputs(raw)  # the model samples and crops itself
        if fingerprint not in self._features:
            length = feature_length(raw)
            pad_to = bucket_length(length) if self.run.length_buckets else length
            ready = self.inputs_dir / inputs_name(cfg, self.run.random_seed, pad_to) if self.inputs_dir else None
            if ready is not None and ready.is_file():
                with open(ready, "rb") as fh:
                    self._features[fingerprint] = pickle.load(fh)
                self.inputs_used.append(ready.name)
            else:
                self._features[fingerprint] = process_features(cfg, raw, self.run.random_seed, pad_to)
        return self._features[fingerprint]

    def run_model(self, name: str, raw: dict, phase: str, resume: ModelRun | None = None,
                  seed_index: int = 0) -> ModelRun:
        """One model's prediction (for a complex, its seed_index-th); `resume` (its own screen) makes the full run
        go on from the screen's state."""
        self._check_cancel()
        cfg = params_mod.runtime_config(name, self.run)
        fingerprint = params_mod.config_fingerprint(cfg)
        feat = self._features_for(cfg, fingerprint, raw)
        model_index = list(self.run.model_names).index(name) if name in self.run.model_names else 0
        seed = self.run.seed_of(model_index, seed_index)
        label = self.run.prediction_name(name, seed_index)
        shapes = params_mod.param_shapes_for(cfg)
        # The compiled apply is loaded (or compiled) while the parameters are read (Predictor.predict's preload).
        entry, compile_s = _Compiled.get(cfg, fingerprint, feat, shapes)
        t0 = time.perf_counter()
        all_params, identity = self.provider.get(self.run.variant(name), self.run.profile)
        params = device_params(identity, params_mod.select(all_params, shapes))
        params_s = time.perf_counter() - t0
        if _param_signature(params) != _param_signature(shapes):  # stored in other dtypes: compiled for those
            entry, more = _Compiled.get(cfg, fingerprint, feat, params)
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
            device_feat = self._device_features(cfg, fingerprint, feat)
            iterations = 1 if phase == "screen" else self.run.num_recycle + 1
            start, state = (1, resume.state) if resume is not None else (0, None)
            try:
                result, recycles, state = _recycle(entry.runner, device_feat, seed, iterations, start,
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
            device=_device_name(), base_model=name, seed_index=seed_index, seed=seed,
            iptm=float(result["iptm"]) if "iptm" in result else None,
        )
        self.progress("model_done", model_run.summary())
        return model_run

    def _device_features(self, cfg, fingerprint: str, feat: dict):
        """The processed features on this thread's device, moved there once for all the models that use them: a
        complex's as they are, a monomer's as one slice per recycling iteration (cut on the host)."""
        key = (fingerprint, _device_name())
        if key not in self._on_device:
            device = _current_device()
            if params_mod.is_multimer(cfg):
                self._on_device[key] = jax.device_put(feat, device)
            else:
                n = cfg.data.eval.num_ensemble
                steps = feat["aatype"].shape[0] // n
                self._on_device[key] = jax.device_put(
                    [{k: v[r * n:(r + 1) * n] for k, v in feat.items()} for r in range(steps)], device)
        return self._on_device[key]

    def _devices(self) -> list:
        """The devices this prediction may use: the first `gpus` JAX sees (a Batch job sees only its own)."""
        if self.run.gpus <= 1:
            return [None]
        return jax.local_devices()[: self.run.gpus]

    def _tasks(self) -> list[tuple[str, int]]:
        """(model, seed index) of every prediction to make, in AlphaFold's order (model by model, seed by seed)."""
        return [(m, i) for m in self.run.model_names for i in range(self.run.seeds)]

    def _run_on_devices(self, tasks: list[tuple[str, int]], raw: dict, devices: list,
                        phase: str = "full") -> list[ModelRun]:
        """Runs of every (model, seed), one thread per device, each taking the next when its device is free.

        Each device gets its own compiled function (the compile cache is keyed by device); the features are
        processed once, before the threads start. A failure or a cancel stops the others at their next recycle.
        """
        for m in {m for m, _ in tasks}:
            cfg = params_mod.runtime_config(m, self.run)
            self._features_for(cfg, params_mod.config_fingerprint(cfg), raw)
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

    def predict(self, raw: dict) -> Prediction:
        requested = self.run
        self.run = run_for(requested, raw)
        try:
            return self._predict(raw)
        finally:
            self.run = requested
            self._on_device.clear()  # the device memory of the features goes with the prediction

    def warm(self, raw: dict) -> float:
        """What predict(raw) will need, made ready ahead of it (a job's next record, while the GPU predicts this
        one): the parameters read in the background, and each configuration's compiled apply loaded from the
        executable cache, or compiled. Returns the seconds spent here."""
        t0 = time.perf_counter()
        requested = self.run
        self.run = run_for(requested, raw)
        try:
            self.provider.preload(list(dict.fromkeys(self.run.variant(m) for m, _ in self._tasks())), self.run.profile)
            self._warm_configs(raw, list(dict.fromkeys(m for m, _ in self._tasks())))
        finally:
            self.run = requested
        return time.perf_counter() - t0

    def _warm_configs(self, raw: dict, models: list[str]) -> None:
        """The compiled apply of each of these models' configurations, loaded or compiled (once per configuration:
        _Compiled shares it)."""
        for name in models:
            cfg = params_mod.runtime_config(name, self.run)
            fingerprint = params_mod.config_fingerprint(cfg)
            _Compiled.get(cfg, fingerprint, self._features_for(cfg, fingerprint, raw), params_mod.param_shapes_for(cfg))

    def _warm_later_configs(self, raw: dict, tasks: list[tuple[str, int]]) -> None:
        """The compiled applies of the configurations after the first (models 3-5, apart from models 1-2's)
        loaded or compiled in a thread while the first runs; their features are made here, first. The thread
        touches nothing of this Predictor; what fails there is logged and left for the run that needs it."""
        configs = {}
        for m, _ in tasks:
            cfg = params_mod.runtime_config(m, self.run)
            configs.setdefault(params_mod.config_fingerprint(cfg), cfg)
        later = [(cfg, fp, self._features_for(cfg, fp, raw)) for fp, cfg in list(configs.items())[1:]]
        if not later:
            return

        def load() -> None:
            try:
                for cfg, fp, feat in later:
                    _Compiled.get(cfg, fp, feat, params_mod.param_shapes_for(cfg))
            except Exception as exc:  # noqa: BLE001 - the run that needs it loads or compiles it again
                log.warning("loading a compiled model ahead failed (%s: %s)", type(exc).__name__, exc)

        threading.Thread(target=_on_device, args=(jax.config.jax_default_device, load), daemon=True,
                         name="predict-configs").start()

    def _predict(self, raw: dict) -> Prediction:
        kind, threshold = self.run.strategy_kind, self.run.stop_threshold
        tasks = self._tasks()
        # The next models' parameters are read from disk while the first runs, and the later configurations'
        # compiled applies loaded (models 3-5 share one, apart from models 1-2's): a failure there is left for
        # the run that needs it to raise.
        self.provider.preload(list(dict.fromkeys(self.run.variant(m) for m, _ in tasks)), self.run.profile)
        if kind != "stop-at-score" and warm_ahead():  # stop-at-score may never need the later configurations
            self._warm_later_configs(raw, tasks)
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
            ranked=ranked, runs=runs, features=self._features_for(cfg, fingerprint, raw),
            strategy=self.run.strategy, config_fingerprint=fingerprint,
            msa_caps=(self.run.max_msa_clusters, self.run.max_extra_msa),
        )
