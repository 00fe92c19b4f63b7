"""jobrun.overlapped: the schedule that keeps the GPU busy while the CPUs finish one item and ready the next."""

from __future__ import annotations

import threading

import pytest

from af2jobs.jobrun import overlapped

WAIT = 10  # seconds before a step that waits for its overlap gives up (only reached when nothing overlaps)


def test_one_items_after_step_runs_while_the_gpu_works_on_the_next():
    gpu_started = {i: threading.Event() for i in range(3)}
    log = []

    def gpu(i):
        gpu_started[i].set()
        log.append(f"gpu{i}")
        return i

    def after(i):
        if i + 1 < 3:  # the next prediction starts before this one is finished
            assert gpu_started[i + 1].wait(WAIT), "the GPU waited for the CPU half"
        log.append(f"after{i}")
        return i * 10

    assert overlapped([0, 1, 2], gpu, after) == [0, 10, 20]
    assert log.index("gpu1") < log.index("after0") and log.index("gpu2") < log.index("after1")


def test_the_next_items_cpu_step_runs_while_the_gpu_works():
    in_gpu = threading.Event()
    release = threading.Event()

    def cpu(i):
        if i == 1:
            assert in_gpu.wait(WAIT), "the next item was not readied during the GPU step"
            release.set()
        return i

    def gpu(i):
        if i == 0:
            in_gpu.set()
            assert release.wait(WAIT)
        return i

    assert overlapped([0, 1], gpu, lambda i: i, cpu) == [0, 1]


def test_a_gpu_failure_lets_the_finished_prediction_end_and_drops_the_rest():
    finished, predicted = [], []

    def gpu(i):
        if i == 1:
            raise RuntimeError("out of memory")
        predicted.append(i)
        return i

    def after(i):
        finished.append(i)
        return i

    with pytest.raises(RuntimeError, match="out of memory"):
        overlapped([0, 1, 2], gpu, after)
    assert predicted == [0] and finished == [0]  # item 0's work is kept, item 2 never started


def test_an_after_step_failure_stops_the_loop_before_the_next_prediction():
    predicted = []
    next_after = threading.Event()  # item 1's after step started: item 0's has ended (one CPU thread, in order)

    def gpu(i):
        if i == 2:
            assert next_after.wait(WAIT)
        predicted.append(i)
        return i

    def after(i):
        if i == 0:
            raise ValueError("relax failed")
        next_after.set()
        return i

    with pytest.raises(ValueError, match="relax failed"):
        overlapped([0, 1, 2, 3], gpu, after)
    assert 3 not in predicted


def test_nothing_to_do():
    assert overlapped([], lambda i: i, lambda i: i) == []
