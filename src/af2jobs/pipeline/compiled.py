"""The model's compiled executables: one compiled apply per (configuration, feature shapes, parameter shapes,
device), shared across models and jobs, kept in memory and on disk (ExecutableCache, in place of JAX's persistent
compilation cache) so that a later process loads it without tracing the model again."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import pickle
import threading
import time
from pathlib import Path

import jax
import numpy as np
from alphafold.model import model as af_model

from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline.devices import current_device, device_name

log = logging.getLogger(__name__)


def enable_compilation_cache(directory: Path) -> None:
    """A compile done once is reused by every later process (a new Batch job, a restarted server): the model's
    compiled executables and its parameter shapes are kept in `directory`.

    JAX's own persistent cache is switched off: it saves the compile but not the trace, and an executable it
    hands back cannot always be serialised again (XLA:CPU's loses its code), so it would spoil this cache."""
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", False)
    Compiled.disk = ExecutableCache(directory / "executables")
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


class Compiled:
    """One runner and its compiled apply per (configuration, feature shapes), shared across models and jobs: the
    KEPT most recently used in memory (a process that predicts for days meets many lengths; the files on disk keep
    the rest)."""

    KEPT = 8
    _cache: dict[tuple, "Compiled"] = {}
    _lock = threading.Lock()  # guards _cache and _making
    _making: dict[tuple, threading.Lock] = {}  # one per key: a load or compile of one does not hold up the others
    disk: ExecutableCache | None = None  # set by enable_compilation_cache

    def __init__(self, runner: af_model.RunModel, compiled, compile_s: float) -> None:
        self.runner = runner
        self.compiled = compiled
        self.compile_s = compile_s
        self.lock = threading.Lock()  # one prediction at a time per runner (it holds the params being used)

    @classmethod
    def get(cls, cfg, fingerprint: str, feat: dict, params: dict) -> tuple["Compiled", float]:
        """The compiled apply for these features' and parameters' shapes (`params` may be jax.ShapeDtypeStruct
        leaves: Predictor.warm loads or compiles ahead of the parameters). Another thread may be predicting with
        another entry meanwhile."""
        shapes = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in feat.items()))
        # The device too: each GPU slot of the local worker runs under its own jax.default_device.
        key = (fingerprint, shapes, params_mod.param_signature(params), device_name())
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
            device = current_device()
            disk_key = cls.disk.key(fingerprint, shapes, params, device) if cls.disk is not None else None
            compiled = cls.disk.load(disk_key, device) if disk_key is not None else None
            if compiled is None:
                compiled = lower_and_compile(runner, params, first_batch(cfg, feat))
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


def lower_and_compile(runner: af_model.RunModel, params: dict, batch: dict):
    """Trace, lower and compile the model's apply for these arguments' shapes (what ExecutableCache saves a later
    process)."""
    return runner.apply.lower(params, np.zeros(2, np.uint32), batch).compile()


def first_batch(cfg, feat: dict) -> dict:
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

