"""monitoring/gpumon.py with a fake NVML (no GPU needed), publishing to moto CloudWatch; the dashboard's metrics."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import boto3
from moto import mock_aws

from af2jobs.adapters.aws.cloudwatch import METRICS as PLATFORM_METRICS
from af2jobs.adapters.aws.cloudwatch import NAMESPACE
from monitoring import dashboard, gpumon

MIB = 1024 * 1024


class FakeNvml:
    """The calls of pynvml that gpumon makes, over scripted readings; GPU 1 has no power sensor."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(self, utilisation: list[list[int]]) -> None:
        self.utilisation = utilisation  # per round, per GPU
        self.round = -1
        self.shut = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.utilisation[0])

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, h: int):
        if h == 0:
            self.round += 1
        return SimpleNamespace(gpu=self.utilisation[self.round][h], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: int):
        return SimpleNamespace(used=(1000 + 500 * self.round) * MIB, total=80_000 * MIB, free=0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 250_000  # mW

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 60

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        return 1980


DIMS = {"job_id": "a" * 32, "instance_id": "i-0123456789abcdef0", "instance_type": "p4d.24xlarge"}


def test_readings_become_samples_and_a_job_summary(tmp_path: Path) -> None:
    nvml = FakeNvml([[90, 5], [70, 15]])
    agent = gpumon.Agent(gpumon.NvmlReader(nvml), out_dir=tmp_path, **DIMS)
    first = agent.sample_once()
    assert [s.gpu for s in first] == [0, 1]
    assert first[0].power_w == 250.0 and first[1].power_w is None  # unsupported: a gap, not a failure
    assert first[0].memory_used_mib == 1000 and first[0].sm_clock_mhz == 1980
    agent.sample_once()
    summary = agent.write_summary(tmp_path)
    assert summary["gpus"]["0"]["mean_utilization_pct"] == 80 and summary["gpus"]["1"]["max_utilization_pct"] == 15
    assert summary["mean_utilization_pct"] == 45 and summary["max_utilization_pct"] == 90
    assert summary["peak_memory_mib"] == 1500
    assert json.loads((tmp_path / "gpu_summary.json").read_text()) == summary
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {x["job_id"] for x in lines} == {DIMS["job_id"]}
    assert [x["utilization_pct"] for x in lines] == [90, 5, 70, 15]


def test_batches_respect_the_count_and_size_limits() -> None:
    items = [{"MetricName": "GPUUtilization", "Value": i} for i in range(2500)]
    sizes = [len(b) for b in gpumon.batches(items)]
    assert sizes == [1000, 1000, 500]
    small = list(gpumon.batches(items[:10], max_bytes=200))
    assert all(len(json.dumps(b)) <= 200 for b in small) and sum(map(len, small)) == 10


def test_publishing_failures_are_retried_a_bounded_number_of_times_and_never_raised() -> None:
    calls, sleeps = [], []

    class Refusing:
        def put_metric_data(self, **kw):
            calls.append(kw)
            raise RuntimeError("Throttling")

    pub = gpumon.CloudWatchPublisher(Refusing(), attempts=3, backoff_s=0.5, sleep=sleeps.append)
    assert pub.publish([{"MetricName": "GPUUtilization", "Value": 1.0}] * 1500) == 0
    assert len(calls) == 6 and sleeps == [0.5, 1.0, 0.5, 1.0] and pub.dropped == 1500


def test_agent_publishes_to_cloudwatch_and_the_metrics_read_back() -> None:
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        pub = gpumon.CloudWatchPublisher(client)
        agent = gpumon.Agent(gpumon.NvmlReader(FakeNvml([[90, 5], [70, 15]])), publisher=pub, **DIMS)
        agent.sample_once()
        agent.sample_once()
        names = {m["MetricName"] for m in client.list_metrics(Namespace="AF2Jobs")["Metrics"]}
        assert names == set(gpumon.METRICS)
        dims = [{"Name": "InstanceId", "Value": DIMS["instance_id"]},
                {"Name": "InstanceType", "Value": DIMS["instance_type"]},
                {"Name": "JobId", "Value": DIMS["job_id"]}, {"Name": "GpuIndex", "Value": "0"}]
        now = datetime.now(timezone.utc)
        stats = client.get_metric_statistics(
            Namespace="AF2Jobs", MetricName="GPUUtilization", Dimensions=dims, StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["Average", "Maximum", "SampleCount"])
        [point] = stats["Datapoints"]
        assert point["Average"] == 80 and point["Maximum"] == 90 and point["SampleCount"] == 2
        # GPU 1 has no power sensor: 7 metrics for GPU 0, 6 for GPU 1, per round.
        assert pub.sent == 2 * (7 + 6)


def test_the_command_exit_status_wins_even_without_nvml(tmp_path: Path, monkeypatch) -> None:
    class NoGpu:
        def __init__(self, nvml=None):
            raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setattr(gpumon, "NvmlReader", NoGpu)
    code = gpumon.main(["--job-id", "j", "--no-cloudwatch", "--out", str(tmp_path), "--",
                        sys.executable, "-c", "raise SystemExit(3)"])
    assert code == 3


# ---------------------------------------------------------------------------------------------------------------
# Dashboard and alarm


def _referenced_metrics(node) -> set[tuple[str, str]]:
    """(namespace, metric) pairs of a dashboard body: metric arrays, SEARCH and Metrics Insights expressions."""
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        expr = node.get("expression") or node.get("Expression")
        if isinstance(expr, str):
            ns = re.search(r"\{([^,}]+)|SCHEMA\(\"?([^\",)]+)", expr)
            namespace = next(g for g in ns.groups() if g)
            for name in re.findall(r'MetricName="([^"]+)"|(?:MIN|MAX|AVG|SUM)\((\w+)\)', expr):
                found.add((namespace, next(n for n in name if n)))
        for value in node.values():
            found |= _referenced_metrics(value)
    elif isinstance(node, list):
        if len(node) >= 2 and all(isinstance(x, str) for x in node[:2]) and "/" in node[0] or (
                node and node[0] == "AF2Jobs"):
            found.add((node[0], node[1]))
        for value in node:
            found |= _referenced_metrics(value)
    return found


def test_the_dashboard_references_only_metrics_that_are_published() -> None:
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:af2jobs"
    body = dashboard.body("us-east-1", arn)
    json.dumps(body)  # a DashboardBody is JSON
    referenced = _referenced_metrics(body)
    # The agent's metrics, the platform's own (af2jobs.adapters.aws.cloudwatch, with a publisher each), AWS's.
    published = {("AF2Jobs", m) for m in gpumon.METRICS} | {(NAMESPACE, m) for m in PLATFORM_METRICS}
    aws = {("AWS/States", m) for m in dashboard.STATES_METRICS}
    assert referenced and referenced <= published | aws, referenced - published - aws
    assert {("AF2Jobs", "GPUUtilization"), ("AF2Jobs", "GPUMemoryUsed")} <= referenced
    # Every widget the issue asks for: jobs by state, queue depth, the stages' CPU and memory, failures, cost per
    # day, phase durations.
    assert {(NAMESPACE, m) for m in PLATFORM_METRICS} <= referenced
    # A SEARCH names exactly the dimensions its metric is published with, or it finds no series.
    for widget in body["widgets"]:
        for row in widget["properties"]["metrics"]:
            expression = row[0].get("expression", "") if isinstance(row[0], dict) else ""
            match = re.search(r"\{AF2Jobs,([^}]+)\} MetricName=\"(\w+)\"", expression)
            if match and match.group(2) in PLATFORM_METRICS:
                assert tuple(match.group(1).split(",")) == PLATFORM_METRICS[match.group(2)][1], expression
    # The checker itself sees a metric nobody publishes.
    assert ("AF2Jobs", "Nope") in _referenced_metrics({"m": [["AF2Jobs", "Nope"]]})


def test_the_idle_gpu_alarm_is_under_10_percent_for_15_minutes_on_a_published_metric() -> None:
    alarm = dashboard.idle_gpu_alarm("arn:aws:sns:us-east-1:123456789012:t")
    assert alarm["Threshold"] == 10 and alarm["ComparisonOperator"] == "LessThanThreshold"
    [metric] = alarm["Metrics"]
    assert metric["Period"] * alarm["EvaluationPeriods"] == 15 * 60 == metric["Period"] * alarm["DatapointsToAlarm"]
    assert _referenced_metrics(alarm) == {("AF2Jobs", "GPUUtilization")}
    with mock_aws():  # CloudWatch accepts it as PutMetricAlarm input
        client = boto3.client("cloudwatch", region_name="us-east-1")
        client.put_metric_alarm(**alarm)
        assert client.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"][0]["Threshold"] == 10


def _alarm_series(alarm: dict, datums: list[dict]) -> dict[tuple, float]:
    """The alarm's Metrics Insights query over one period's datums: SELECT FN(metric) FROM SCHEMA(ns, dims...)
    GROUP BY keys -> {group key values: value}, as CloudWatch evaluates each returned series."""
    [metric] = alarm["Metrics"]
    query = re.fullmatch(r'SELECT (MAX|MIN|AVG)\((\w+)\) FROM SCHEMA\("(\w+)", ([\w, ]+)\)(?: GROUP BY ([\w, ]+))?',
                         metric["Expression"])
    assert query, metric["Expression"]
    function, name, _, schema, group = query.groups()
    schema_dims, keys = set(schema.split(", ")), group.split(", ") if group else []
    groups: dict[tuple, list[float]] = {}
    for datum in datums:
        dims = {d["Name"]: d["Value"] for d in datum["Dimensions"]}
        if datum["MetricName"] == name and set(dims) == schema_dims:  # SCHEMA: exactly these dimensions
            groups.setdefault(tuple(dims[k] for k in keys), []).append(datum["Value"])
    reduce = {"MAX": max, "MIN": min, "AVG": lambda v: sum(v) / len(v)}[function]
    return {key: reduce(values) for key, values in groups.items()}


def _breaching(alarm: dict, datums: list[dict]) -> set[tuple]:
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    return {key for key, value in _alarm_series(alarm, datums).items() if value < alarm["Threshold"]}


def test_the_idle_gpu_alarm_fires_for_a_job_whose_gpus_are_all_idle_not_for_one_using_some() -> None:
    """A 4-GPU predict job whose phase uses one GPU (strategy best's final run, relax, ...) is busy; a job with
    every GPU idle is what the alarm is for. Two jobs share the instance; the series are gpumon's own datums."""
    alarm = dashboard.idle_gpu_alarm()
    one_busy = [gpumon.Sample(0.0, g, 95.0 if g == 0 else 0.0, 1000, 80_000, None, None, None) for g in range(4)]
    all_idle = [gpumon.Sample(0.0, g, 2.0, 1000, 80_000, None, None, None) for g in range(4, 6)]
    instance = {"InstanceId": "i-0123456789abcdef0", "InstanceType": "p4d.24xlarge"}
    datums = (gpumon.datums(one_busy, {**instance, "JobId": "busy"})
              + gpumon.datums(all_idle, {**instance, "JobId": "idle"}))
    assert _breaching(alarm, datums) == {("idle", "i-0123456789abcdef0")}
    assert _breaching(alarm, gpumon.datums(one_busy, {**instance, "JobId": "busy"})) == set()
    # The earlier alarm (the least busy GPU over every series) fired for the busy job: the check tells them apart.
    lowest = {**alarm, "Metrics": [{**alarm["Metrics"][0], "Expression": alarm["Metrics"][0]["Expression"].replace(
        "MAX(", "MIN(").split(" GROUP BY")[0]}]}
    assert _breaching(lowest, gpumon.datums(one_busy, {**instance, "JobId": "busy"})) == {()}
    # Grouped by what gpumon publishes: every group key is one of its dimensions.
    group = alarm["Metrics"][0]["Expression"].split(" GROUP BY ")[1].split(", ")
    assert set(group) <= set(gpumon.DIMENSIONS) and "JobId" in group and "GpuIndex" not in group


def test_the_instance_identity_comes_from_the_environment_then_the_hosts_file_then_local(tmp_path: Path) -> None:
    written = tmp_path / "instance.json"
    written.write_text(json.dumps({"instance_id": "i-0abc", "instance_type": "g5.12xlarge"}))
    assert gpumon.instance_identity({}, written) == ("i-0abc", "g5.12xlarge")
    assert gpumon.instance_identity({"AF2_INSTANCE_ID": "i-env", "AF2_INSTANCE_TYPE": "p5.48xlarge"}, written) == (
        "i-env", "p5.48xlarge")
    assert gpumon.instance_identity({"AF2_INSTANCE_TYPE": "p5.48xlarge"}, written) == ("i-0abc", "p5.48xlarge")
    # Off EC2 (no file), or a file that is not what the user data writes: the dimensions say local.
    assert gpumon.instance_identity({}, tmp_path / "missing.json") == ("local", "local")
    written.write_text("not json")
    assert gpumon.instance_identity({}, written) == ("local", "local")
    written.write_text("[]")
    assert gpumon.instance_identity({"AF2_INSTANCE_ID": "i-env"}, written) == ("i-env", "local")
    # The container reads it where the job definition mounts the host's folder (tests/iac checks the mount).
    assert gpumon.INSTANCE_FILE == Path("/etc/af2jobs/instance.json")


def test_the_user_datas_line_writes_the_file_gpumon_reads(tmp_path: Path) -> None:
    """The launch template's printf, run with a stand-in for IMDS, gives JSON that instance_identity reads."""
    import subprocess

    from tests.iac.test_template import load_template

    script = load_template()["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"][
        "Fn::Base64"]["Fn::Sub"]
    (line,) = [x.strip() for x in script.splitlines() if x.strip().startswith("printf ")]
    target = tmp_path / "instance.json"
    line = line.replace(f"{gpumon.INSTANCE_FILE}.tmp", str(target))
    metadata = {"instance-id": "i-0123456789abcdef0", "instance-type": "g6e.12xlarge"}
    imds = 'imds() { case "$1" in ' + " ".join(f'{k}) echo {v};;' for k, v in metadata.items()) + " esac; }"
    subprocess.run(["bash", "-euo", "pipefail", "-c", f"{imds}\n{line}"], check=True)
    assert gpumon.instance_identity({}, target) == ("i-0123456789abcdef0", "g6e.12xlarge")


def test_the_agent_forwards_terminate_to_the_stage_and_returns_its_status(tmp_path):
    """In a container the agent is PID 1: TerminateJob's SIGTERM must reach the stage, whose status it returns."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    ready = tmp_path / "ready"
    child = ("import signal, sys, time, pathlib; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
             f"pathlib.Path({str(ready)!r}).write_text('1'); time.sleep(60)")
    agent = Path(__file__).resolve().parents[2] / "monitoring" / "gpumon.py"
    proc = subprocess.Popen([sys.executable, str(agent), "--job-id", "t", "--no-cloudwatch", "--interval", "1",
                             "--", sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143
