"""CPU and memory of a Batch stage's container, published while it runs (the MSA and predict jobs' rows of the
dashboard): StageCPUUsed (vCPUs busy, averaged since the last sample) and StageMemoryUsed (MiB), dimension Stage.

Read from the container's cgroup, which counts every process of the job (jackhmmer and hhblits children
included): cgroup v2 cpu.stat usage_usec and memory.current, else cgroup v1 cpuacct.usage and
memory.usage_in_bytes; where neither is mounted (a laptop, a test), this process's and its waited-for children's
getrusage CPU time and the peak resident size. A sample every USAGE_INTERVAL_S and one when the stage ends.
Best effort: a read or a publish that fails is logged and the stage carries on.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

from af2jobs.awsrun.parts import Metrics

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")
USAGE_INTERVAL_S = 60.0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cpu_seconds(root: Path = CGROUP) -> float:
    """CPU seconds the container (or, without a cgroup, this process and its children) has used."""
    stat = _read(root / "cpu.stat")
    if stat is not None:
        for line in stat.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    for v1 in (root / "cpuacct" / "cpuacct.usage", root / "cpuacct.usage"):
        text = _read(v1)
        if text is not None and text.strip().isdigit():
            return int(text) / 1e9
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def memory_mib(root: Path = CGROUP) -> float:
    """Memory the container uses now (or, without a cgroup, this process's peak resident size), in MiB."""
    for path in (root / "memory.current", root / "memory" / "memory.usage_in_bytes"):
        text = _read(path)
        if text is not None and text.strip().isdigit():
            return int(text) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class UsageReporter:
    """Samples the container every `interval_s` on a daemon thread, and once more at stop()."""

    def __init__(self, stage: str, metrics: Metrics, *, interval_s: float = USAGE_INTERVAL_S,
                 root: Path = CGROUP, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage, self.metrics, self.interval_s, self.root, self.clock = stage, metrics, interval_s, root, clock
        self._last = (clock(), cpu_seconds(root))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> tuple[float, float]:
        """(vCPUs busy since the last sample, MiB now), published."""
        now, used = self.clock(), cpu_seconds(self.root)
        then, before = self._last
        self._last = (now, used)
        vcpus = max(0.0, used - before) / (now - then) if now > then else 0.0
        memory = memory_mib(self.root)
        self.metrics.put("StageCPUUsed", round(vcpus, 3), Stage=self.stage)
        self.metrics.put("StageMemoryUsed", round(memory, 1), Stage=self.stage)
        return vcpus, memory

    def _safe_sample(self) -> None:
        try:
            self.sample()
        except Exception as exc:  # a metric is never worth a failed stage
            log.warning("usage sample failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._safe_sample()

    def start(self) -> UsageReporter:
        self._thread = threading.Thread(target=self._loop, name=f"usage-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._safe_sample()


__all__ = ["USAGE_INTERVAL_S", "UsageReporter", "cpu_seconds", "memory_mib"]
