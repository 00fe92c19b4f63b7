"""The recycling loop of one model's run (RunModel.predict's), able to go on from a saved state: a screen's single
iteration becomes the first of the full run."""

from __future__ import annotations

from typing import Callable

import jax
from alphafold.model import model as af_model

from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline.devices import zero_state
from af2jobs.pipeline.keys import key_chain


def recycle(runner: af_model.RunModel, feat, seed: int, iterations: int, start: int, state: dict | None,
            on_recycle: Callable[[dict, int], None], keep_large: bool = True) -> tuple[dict, int, dict]:
    """RunModel.predict's recycling loop, able to start at iteration `start` from a saved state.

    `feat` is on the device already (ModelInputs.on_this_device, one copy per device): a complex's features, or a
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


def _host_only(tree):
    """The tree without the leaves still on the device (those _fetch_small left there)."""
    if isinstance(tree, dict):
        return {k: _host_only(v) for k, v in tree.items() if not isinstance(v, jax.Array)}
    return tree
