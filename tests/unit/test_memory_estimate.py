"""af2jobs.memory's estimate of a prediction's peak memory against every peak recorded in bench/results/memory/
(this machine's CPU runs of bench/memory.py; the H200 figures of docs/performance.md): never below one, and not so
far above that it would refuse what fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from af2jobs import memory
from af2jobs.runconfig import RunConfig

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "memory"
RECORDS = [r for path in sorted(RESULTS.glob("*.json")) for r in json.loads(path.read_text())]


def _run(record: dict) -> RunConfig:
    values = {"profile": record["profile"], "model_names": record["models"], "strategy": record["strategy"],
              "length_buckets": record["length_buckets"]}
    if record.get("multimer"):
        values.update(model_preset="multimer", num_multimer_predictions_per_model=1)
    if "caps" in record:  # the caps the run used (already fitted to its MSA)
        values.update(max_msa_clusters=record["caps"][0], max_extra_msa=record["caps"][1])
    return RunConfig(**values)


def _measured(record: dict) -> int:
    """A CPU prediction's peak is its process's (resident memory); a GPU's, the device's (peak bytes in use, or
    XLA's compiled figure where only that was taken)."""
    if record["backend"] == "cpu":
        return record["peak_rss_bytes"]
    return record.get("device_peak_bytes") or record["compiled_bytes"]


def test_there_are_records_of_both_backends_and_both_kinds_of_model():
    assert {r["backend"] for r in RECORDS} == {"cpu", "gpu"}
    assert {bool(r.get("multimer")) for r in RECORDS} == {False, True}
    assert {r["profile"] for r in RECORDS if r["backend"] == "cpu"} == {"tiny", "full"}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{r['backend']}-{r['profile']}-{r['length']}"
                         + ("-multimer" if r.get("multimer") else ""))
def test_the_estimate_holds_every_recorded_peak(record):
    depth = None if "caps" in record else record["depth"]
    estimate = memory.prediction_bytes(record["length"], _run(record), record["backend"], depth=depth)
    measured = _measured(record)
    assert estimate >= measured, f"{memory.gib(estimate)} estimated, {memory.gib(measured)} measured"
    assert estimate <= 1.35 * measured + 2.75 * memory.GIB, f"{memory.gib(estimate)} for {memory.gib(measured)}"


def test_the_estimate_grows_with_the_square_of_the_length_and_with_the_msa():
    run = RunConfig(profile="full", length_buckets=False)
    small, large = (memory.prediction_bytes(n, run, "cpu", depth=1) for n in (1000, 2000))
    pairs = memory.COEFFICIENTS[("cpu", False)].pair * (2000 ** 2 - 1000 ** 2)
    assert large - small == pytest.approx(pairs, rel=0.05)
    assert memory.prediction_bytes(1000, run, "gpu", depth=5000) > memory.prediction_bytes(1000, run, "gpu", depth=1)
    # A 1,934-residue record on a CPU (which grew past 20.5 GB before the kernel killed the server): over 24 GB.
    assert memory.prediction_bytes(1934, RunConfig(max_msa_clusters=64, max_extra_msa=128), "cpu") > 24 * memory.GIB


def test_capacity_is_the_smaller_of_the_device_and_the_operators_cap():
    assert memory.Capacity.of("cpu", "cpu", 10 * memory.GIB, None).bytes == 10 * memory.GIB
    assert memory.Capacity.of("cpu", "cpu", 10 * memory.GIB, 4.0).bytes == 4 * memory.GIB
    assert memory.Capacity.of("gpu", "NVIDIA H100", 79 * memory.GIB, None).describe() == \
        "79.0 GB (the NVIDIA H100's memory)"
