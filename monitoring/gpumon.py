#!/usr/bin/env python3
"""gpumon: per-GPU utilisation, memory, power, temperature and SM clock, sampled every N seconds through NVML.

    python3 monitoring/gpumon.py --job-id ID [--interval 10] [--out DIR] [--no-cloudwatch] -- COMMAND ...

runs COMMAND (the predict job) and samples the GPUs until it exits; the exit status is COMMAND's. Each round of
samples goes to
  - CloudWatch custom metrics (namespace AF2Jobs; dimensions InstanceId, InstanceType, GpuIndex, JobId), sent by
    PutMetricData in batches of at most 1,000 datums and under 1 MB, with a bounded number of retries. InstanceId
    and InstanceType are AF2_INSTANCE_ID / AF2_INSTANCE_TYPE, else what the instance's user data wrote to
    /etc/af2jobs/instance.json on the host (mounted read-only into the predict container), else "local";
  - DIR/metrics.jsonl, one JSON line per GPU and sample, when --out is given (the job's outputs locally).
At the end it writes DIR/gpu_summary.json (mean and max utilisation, peak memory, per GPU and overall), the
per-job summary that goes onto the job record; with --s3-uri it also puts the summary at that S3 object (on AWS
the entrypoint names s3://<results bucket>/jobs/<id>/output/gpu_summary.json, which the state machine's
MarkSucceeded step copies onto the job record as cost["gpu"]).

The agent must never fail the job it watches: NVML missing, CloudWatch refusing or throttling, a full disk: each
is logged and the agent carries on (or stops sampling), and COMMAND's exit status is returned untouched.
NVML is injected (`nvml=`), so tests run it with a fake module and no GPU. Python 3.9+, no af2jobs import: the
file is copied into the GPU image as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

log = logging.getLogger("gpumon")

NAMESPACE = "AF2Jobs"
DIMENSIONS = ("InstanceId", "InstanceType", "GpuIndex", "JobId")
MAX_DATUMS = 1000  # PutMetricData: at most 1,000 metric datums per request
MAX_BYTES = 1_000_000  # and at most 1 MB per request; the JSON size below is a conservative stand-in
# Metric name -> (Sample field, CloudWatch unit). The dashboard (dashboard.py) may reference only these.
METRICS: Dict[str, tuple] = {
    "GPUUtilization": ("utilization_pct", "Percent"),
    "GPUMemoryUtilization": ("memory_pct", "Percent"),
    "GPUMemoryUsed": ("memory_used_mib", "Megabytes"),
    "GPUMemoryTotal": ("memory_total_mib", "Megabytes"),
    "GPUPowerDraw": ("power_w", "None"),  # watts; CloudWatch has no watt unit
    "GPUTemperature": ("temperature_c", "None"),  # degrees Celsius
    "GPUSMClock": ("sm_clock_mhz", "None"),  # MHz
}
_MIB = 1024 * 1024


@dataclass
class Sample:
    time: float
    gpu: int
    utilization_pct: float
    memory_used_mib: float
    memory_total_mib: float
    power_w: Optional[float]
    temperature_c: Optional[float]
    sm_clock_mhz: Optional[float]

    @property
    def memory_pct(self) -> float:
        return 100.0 * self.memory_used_mib / self.memory_total_mib if self.memory_total_mib else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Reading NVML


class NvmlReader:
    """Reads every GPU through NVML (the `pynvml` module of nvidia-ml-py, or a stand-in with the same calls)."""

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py
        self.nvml = nvml
        nvml.nvmlInit()
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    def _optional(self, call: Callable[[], float]) -> Optional[float]:
        # Power and clocks are not supported on every board (NVMLError_NotSupported): a gap, not a failure.
        try:
            return float(call())
        except self.nvml.NVMLError:
            return None

    def read(self) -> List[Sample]:
        n = self.nvml
        now = time.time()
        samples = []
        for index, h in enumerate(self.handles):
            util = n.nvmlDeviceGetUtilizationRates(h)
            mem = n.nvmlDeviceGetMemoryInfo(h)
            samples.append(Sample(
                time=now, gpu=index, utilization_pct=float(util.gpu),
                memory_used_mib=mem.used / _MIB, memory_total_mib=mem.total / _MIB,
                power_w=self._optional(lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0),
                temperature_c=self._optional(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
                sm_clock_mhz=self._optional(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            ))
        return samples

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


# ---------------------------------------------------------------------------------------------------------------
# CloudWatch


def datums(samples: Iterable[Sample], dims: Dict[str, str]) -> List[Dict[str, Any]]:
    """PutMetricData datums for a round of samples: one per metric and GPU (missing readings left out)."""
    out = []
    for s in samples:
        dimensions = [{"Name": k, "Value": str(v)} for k, v in {**dims, "GpuIndex": s.gpu}.items()]
        for name, (attr, unit) in METRICS.items():
            value = getattr(s, attr)
            if value is not None:
                out.append({"MetricName": name, "Dimensions": dimensions, "Timestamp": s.time,
                            "Value": round(float(value), 3), "Unit": unit})
    return out


def batches(items: List[Dict[str, Any]], max_count: int = MAX_DATUMS, max_bytes: int = MAX_BYTES
            ) -> Iterator[List[Dict[str, Any]]]:
    """Consecutive batches within PutMetricData's count and size limits."""
    batch: List[Dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, default=str)) + 2
        if batch and (len(batch) >= max_count or size + item_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


class CloudWatchPublisher:
    """PutMetricData with bounded retries; failures are logged and counted, never raised."""

    def __init__(self, client: Any = None, namespace: str = NAMESPACE, attempts: int = 3, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if client is None:
            import boto3

            client = boto3.client("cloudwatch")
        self.client, self.namespace, self.attempts, self.backoff_s, self.sleep = (
            client, namespace, attempts, backoff_s, sleep)
        self.sent = 0
        self.dropped = 0

    def publish(self, items: List[Dict[str, Any]]) -> int:
        for batch in batches(items):
            for attempt in range(1, self.attempts + 1):
                try:
                    self.client.put_metric_data(Namespace=self.namespace, MetricData=batch)
                    self.sent += len(batch)
                    break
                except Exception as exc:  # throttling, network, credentials: none may stop the job
                    if attempt == self.attempts:
                        self.dropped += len(batch)
                        log.warning("gpumon: dropped %d datums after %d attempts: %s", len(batch), attempt, exc)
                    else:
                        self.sleep(self.backoff_s * 2 ** (attempt - 1))
        return self.sent


# ---------------------------------------------------------------------------------------------------------------
# The summary for the job record


@dataclass
class _Acc:
    n: int = 0
    util_sum: float = 0.0
    util_max: float = 0.0
    mem_peak_mib: float = 0.0
    mem_total_mib: float = 0.0

    def add(self, s: Sample) -> None:
        self.n += 1
        self.util_sum += s.utilization_pct
        self.util_max = max(self.util_max, s.utilization_pct)
        self.mem_peak_mib = max(self.mem_peak_mib, s.memory_used_mib)
        self.mem_total_mib = s.memory_total_mib

    def out(self) -> Dict[str, Any]:
        return {"samples": self.n, "mean_utilization_pct": round(self.util_sum / self.n, 2) if self.n else None,
                "max_utilization_pct": self.util_max, "peak_memory_mib": round(self.mem_peak_mib, 1),
                "memory_total_mib": round(self.mem_total_mib, 1)}


@dataclass
class Summary:
    per_gpu: Dict[int, _Acc] = field(default_factory=dict)

    def add(self, samples: Iterable[Sample]) -> None:
        for s in samples:
            self.per_gpu.setdefault(s.gpu, _Acc()).add(s)

    def to_dict(self) -> Dict[str, Any]:
        gpus = {str(i): a.out() for i, a in sorted(self.per_gpu.items())}
        n = sum(a.n for a in self.per_gpu.values())
        return {
            "gpus": gpus,
            "mean_utilization_pct": round(sum(a.util_sum for a in self.per_gpu.values()) / n, 2) if n else None,
            "max_utilization_pct": max((a.util_max for a in self.per_gpu.values()), default=None),
            "peak_memory_mib": max((round(a.mem_peak_mib, 1) for a in self.per_gpu.values()), default=None),
        }


# ---------------------------------------------------------------------------------------------------------------
# The agent


class Agent:
    def __init__(self, reader: Any, *, job_id: str, instance_id: str, instance_type: str,
                 publisher: Optional[CloudWatchPublisher] = None, out_dir: Optional[Path] = None,
                 interval_s: float = 10.0) -> None:
        self.reader, self.publisher, self.interval_s = reader, publisher, interval_s
        self.dims = {"InstanceId": instance_id, "InstanceType": instance_type, "JobId": job_id}
        self.jsonl = out_dir / "metrics.jsonl" if out_dir is not None else None
        self.summary = Summary()
        self._stop = threading.Event()

    def sample_once(self) -> List[Sample]:
        samples = self.reader.read()
        self.summary.add(samples)
        if self.jsonl is not None:
            try:
                self.jsonl.parent.mkdir(parents=True, exist_ok=True)
                with open(self.jsonl, "a") as fh:
                    for s in samples:
                        fh.write(json.dumps({**asdict(s), "job_id": self.dims["JobId"]}) + "\n")
            except OSError as exc:
                log.warning("gpumon: cannot write %s: %s", self.jsonl, exc)
        if self.publisher is not None:
            self.publisher.publish(datums(samples, self.dims))
        return samples

    def run(self) -> None:
        """Sample until stop(); a failing reading ends sampling (logged), never the process."""
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as exc:
                log.warning("gpumon: sampling stopped: %s", exc)
                return
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()

    def write_summary(self, out_dir: Optional[Path]) -> Dict[str, Any]:
        data = self.summary.to_dict()
        if out_dir is not None:
            try:
                (out_dir / "gpu_summary.json").write_text(json.dumps(data, indent=2) + "\n")
            except OSError as exc:
                log.warning("gpumon: cannot write the summary: %s", exc)
        return data


def upload_summary(data: Dict[str, Any], uri: str, client: Any = None) -> bool:
    """Put the summary at s3://bucket/key; False (logged) when that fails: the job's own status still wins."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        if not uri.startswith("s3://") or not bucket or not key:
            raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
        if client is None:
            import boto3

            client = boto3.client("s3")
        client.put_object(Bucket=bucket, Key=key, Body=(json.dumps(data, indent=2) + "\n").encode(),
                          ContentType="application/json")
        return True
    except Exception as exc:  # credentials, network, a bad URI: the job must not fail for its summary
        log.warning("gpumon: cannot put the summary at %s: %s", uri, exc)
        return False


# Where the instance's user data (template.yaml, LaunchTemplate) writes the instance's identity on the host, and
# where the predict job definition mounts that folder read-only. The container cannot ask the instance metadata
# service itself: the launch template's hop limit of 1 keeps IMDS answers from reaching containers.
INSTANCE_FILE = Path("/etc/af2jobs/instance.json")


def instance_identity(environ: Dict[str, str], path: Path = INSTANCE_FILE) -> Tuple[str, str]:
    """(instance id, instance type): AF2_INSTANCE_ID / AF2_INSTANCE_TYPE when set, else the host's instance file,
    else "local" (off EC2, or a file that is missing or unreadable)."""
    try:
        written = json.loads(path.read_text())
        if not isinstance(written, dict):
            raise ValueError(f"{path} holds no JSON object")
    except (OSError, ValueError) as exc:
        if not (environ.get("AF2_INSTANCE_ID") and environ.get("AF2_INSTANCE_TYPE")):
            log.info("gpumon: no instance identity from %s (%s); dimensions say local", path, exc)
        written = {}

    def value(variable: str, key: str) -> str:
        found = environ.get(variable) or written.get(key)
        return str(found) if found else "local"

    return value("AF2_INSTANCE_ID", "instance_id"), value("AF2_INSTANCE_TYPE", "instance_type")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--out", type=Path, help="write metrics.jsonl and gpu_summary.json here")
    parser.add_argument("--no-cloudwatch", action="store_true", help="do not publish (local runs)")
    parser.add_argument("--s3-uri", help="also put gpu_summary.json at this s3://bucket/key at the end")
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run and watch")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpumon %(levelname)s %(message)s")

    child = subprocess.Popen(command) if command else None
    if child is not None:
        # In a container this agent is PID 1: Batch's TerminateJob signal must reach the stage it watches.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    agent = None
    try:
        publisher = None if args.no_cloudwatch else CloudWatchPublisher(namespace=args.namespace)
        instance_id, instance_type = instance_identity(dict(os.environ))
        agent = Agent(NvmlReader(), job_id=args.job_id, instance_id=instance_id, instance_type=instance_type,
                      publisher=publisher, out_dir=args.out, interval_s=args.interval)
        threading.Thread(target=agent.run, name="gpumon", daemon=True).start()
    except Exception as exc:  # no NVML, no boto3, no credentials: the job runs unwatched
        log.warning("gpumon: not monitoring: %s", exc)
    status = 0
    try:
        if child is not None:
            status = child.wait()
        elif agent is not None:  # no command: sample until interrupted (SIGINT)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        status = child.wait() if child is not None else 0
    if agent is not None:
        agent.stop()
        summary = agent.write_summary(args.out)
        print(json.dumps(summary))
        if args.s3_uri:
            upload_summary(summary, args.s3_uri)
    return status


if __name__ == "__main__":
    sys.exit(main())
