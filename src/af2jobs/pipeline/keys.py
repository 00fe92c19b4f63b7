"""The random keys of the recycling iterations, drawn on the host: JAX's threefry2x32 and split in numpy, so that
a new process (or a new length) compiles no small JAX function before its first prediction."""

from __future__ import annotations

import jax
import numpy as np


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
