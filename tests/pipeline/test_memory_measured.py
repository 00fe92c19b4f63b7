"""af2jobs.memory against the models themselves: its parameter counts are the official shapes', and its estimate
holds the peak of a real prediction measured now, in a fresh process as a slot's runs it (bench/memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from af2jobs import memory
from af2jobs.pipeline import params
from af2jobs.runconfig import RunConfig

pytestmark = pytest.mark.pipeline
BENCH = Path(__file__).resolve().parents[2] / "bench" / "memory.py"


@pytest.mark.parametrize("profile", ["tiny", "full"])
def test_the_parameter_counts_are_the_models(profile):
    counts = {}
    for model in ("model_1", "model_3"):
        shapes = params.param_shapes_for(params.runtime_config(model, RunConfig(profile=profile)))
        counts[model] = sum(int(np.prod(v.shape)) for scope in shapes.values() for v in scope.values())
    assert memory.PARAMETERS[profile] == max(counts.values())


def test_the_estimate_holds_a_prediction_measured_now(tmp_path, shared_cache):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, shared in (("params", "params-untrained"), ("jax", "jax")):
        (shared_cache / shared).mkdir(exist_ok=True)
        (cache / name).symlink_to(shared_cache / shared)
    out = tmp_path / "r.json"
    # One model, one iteration (later iterations reuse the first's buffers: the peak is reached in the first).
    subprocess.run([sys.executable, str(BENCH), "one", "--profile", "tiny", "--length", "256", "--depth", "200",
                    "--models", "model_3", "--strategy", "all", "--recycles", "0", "--cache", str(cache),
                    "--json", str(out)], check=True, capture_output=True, timeout=600)
    record = json.loads(out.read_text())
    assert record["backend"] == "cpu" and record["peak_rss_bytes"] > 0.5 * memory.GIB
    assert record["peak_rss_bytes"] <= record["estimate_bytes"] <= 1.35 * record["peak_rss_bytes"] + 2 * memory.GIB
