"""af2jobs.awsrun.usage: a Batch container's CPU and memory from its cgroup, as StageCPUUsed / StageMemoryUsed."""

from __future__ import annotations

from pathlib import Path

from af2jobs.adapters.aws.cloudwatch import emf_document
from af2jobs.awsrun import usage


class Recorded:
    def __init__(self) -> None:
        self.data: list[tuple[str, float, dict[str, str]]] = []

    def put(self, name: str, value: float, **dimensions: str) -> None:
        emf_document(name, value, dimensions)  # a declared metric with its declared dimensions
        self.data.append((name, value, dimensions))


def test_cgroup_v2_cpu_time_and_memory_become_vcpus_busy_and_mib(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 10000000\nuser_usec 9000000\n")
    (tmp_path / "memory.current").write_text(str(3 * 2**30) + "\n")
    now = [100.0]
    metrics = Recorded()
    reporter = usage.UsageReporter("msa", metrics, root=tmp_path, clock=lambda: now[0])
    # 60 s later the container has used 240 more CPU seconds: 4 vCPUs busy on average.
    now[0] += 60
    (tmp_path / "cpu.stat").write_text("usage_usec 250000000\n")
    assert reporter.sample() == (4.0, 3072.0)
    assert metrics.data == [("StageCPUUsed", 4.0, {"Stage": "msa"}), ("StageMemoryUsed", 3072.0, {"Stage": "msa"})]


def test_cgroup_v1_and_no_cgroup_are_read_too(tmp_path: Path) -> None:
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("5000000000\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(str(2**30))
    assert usage.cpu_seconds(tmp_path) == 5.0 and usage.memory_mib(tmp_path) == 1024.0
    empty = tmp_path / "none"
    assert usage.cpu_seconds(empty) > 0 and usage.memory_mib(empty) > 0  # this process's getrusage


def test_stop_publishes_a_last_sample_and_a_failing_publisher_is_not_raised(tmp_path: Path) -> None:
    metrics = Recorded()
    usage.UsageReporter("predict", metrics, interval_s=3600, root=tmp_path).start().stop()
    assert [name for name, _, _ in metrics.data] == ["StageCPUUsed", "StageMemoryUsed"]

    class Broken:
        def put(self, *args, **kwargs) -> None:
            raise RuntimeError("no credentials")

    usage.UsageReporter("predict", Broken(), root=tmp_path).start().stop()  # logged only
