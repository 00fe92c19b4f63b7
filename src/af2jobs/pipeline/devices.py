"""Where the model runs: this thread's device, what the machine offers one prediction (kind, memory), and what is
kept on each device between runs (the parameters of the last models, the zero recycling state)."""

from __future__ import annotations

import threading
from typing import Callable

import jax
import numpy as np

from af2jobs import memory
from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline.results import ModelRun


def device_kind() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', '')}"


def memory_capacity() -> tuple[str, str, int | None]:
    """(backend, device kind, bytes) one prediction may use here: the GPU's memory as XLA may take it (with
    AF2_UNIFIED_MEMORY, what it may spill too; None where the device does not say), or this machine's less
    memory.HOST_RESERVE for the rest of it."""
    device = current_device()
    if device.platform == "gpu":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        return "gpu", str(getattr(device, "device_kind", "gpu")), int(limit) if limit else None
    return device.platform, device.platform, max(memory.host_bytes() - memory.HOST_RESERVE, 0)


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def current_device():
    device = jax.config.jax_default_device
    return device if isinstance(device, jax.Device) else jax.devices()[0]


def device_name() -> str:
    device = current_device()
    return f"{device.platform}:{device.id}"


def on_device(device, fn: Callable, *args) -> None:
    """fn(*args) under this default device (a thread does not inherit its creator's jax.default_device)."""
    with jax.default_device(device):
        fn(*args)


def winner_device(winner: ModelRun, devices: list):
    """The device whose memory holds a screen's recycling state (None: the default device)."""
    if devices == [None] or not winner.device:
        return None
    return next((d for d in devices if f"{d.platform}:{d.id}" == winner.device), None)


DEVICE_PARAMS_KEPT = memory.MODELS_KEPT  # models' parameters kept on each device (best and all use five)
_on_device_params: dict[tuple, dict] = {}  # (file, parameter signature, device) -> the tree on that device
_params_lock = threading.Lock()


def device_params(identity: params_mod.ParamsIdentity, params: dict) -> dict:
    """The parameters on this thread's device, moved there once and kept for the next screens, runs and records
    (the last DEVICE_PARAMS_KEPT models per device): a host tree handed to every execution is copied to the
    device each time."""
    device = current_device()
    key = (identity.path, identity.sha256, params_mod.param_signature(params), f"{device.platform}:{device.id}")
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
    device = current_device()
    key = (length, f"{device.platform}:{device.id}")
    with _zeros_lock:
        if key not in _zeros:
            for old in [k for k in _zeros if k[1] == key[1]]:
                del _zeros[old]
            _zeros[key] = jax.device_put({"prev_msa_first_row": np.zeros([length, 256], np.float16),
                                          "prev_pair": np.zeros([length, length, 128], np.float16),
                                          "prev_pos": np.zeros([length, 37, 3], np.float16)}, device)
        return _zeros[key]
