#!/usr/bin/env python3
"""The CloudWatch dashboard body (JSON) and the idle-GPU alarm, as data.

    python3 monitoring/dashboard.py --region us-east-1 --state-machine-arn ARN > body.json
    python3 monitoring/dashboard.py --sync-template template.yaml     # rewrite template.yaml's DashboardBody line

References only metrics that are published: the gpumon agent's (gpumon.METRICS, namespace AF2Jobs, dimensions
InstanceId, InstanceType, GpuIndex, JobId), the platform's own (af2jobs.adapters.aws.cloudwatch.METRICS: jobs
entering each state, failures by stage, phase seconds and dollars of succeeded jobs, Batch queue depth, CPU and
memory of the msa and predict containers) and Step Functions' own AWS/States execution metrics. template.yaml
wires the body in (DashboardBody with the region and the state machine's ARN substituted); tests keep the two
equal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

from af2jobs.adapters.aws.cloudwatch import METRICS as PLATFORM_METRICS

try:  # as a module of the repository (tests) or as a script beside gpumon.py
    from monitoring.gpumon import DIMENSIONS, NAMESPACE
except ImportError:  # pragma: no cover
    from gpumon import DIMENSIONS, NAMESPACE  # type: ignore[no-redef]

STATES_METRICS = ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut",
                  "ExecutionsAborted", "ExecutionTime")
_SCHEMA = "{" + ",".join((NAMESPACE, *DIMENSIONS)) + "}"


def _search(metric: str, stat: str, label: str, period: int = 60) -> Dict[str, Any]:
    return {"expression": f"SEARCH('{_SCHEMA} MetricName=\"{metric}\"', '{stat}', {period})", "label": label,
            "id": f"{metric.lower()}_{stat.lower()}"}


def _platform_widget(title: str, metric: str, stat: str, period: int, x: int, y: int, region: str,
                     view: str = "timeSeries") -> Dict[str, Any]:
    """One of the platform's metrics (PLATFORM_METRICS), every series of it: a SEARCH over its dimensions."""
    _, dims = PLATFORM_METRICS[metric]
    expression = f"SEARCH('{{{','.join((NAMESPACE, *dims))}}} MetricName=\"{metric}\"', '{stat}', {period})"
    props = {"title": title, "region": region, "view": view, "stacked": view == "bar", "period": period,
             "metrics": [[{"expression": expression, "label": f"{metric} ({stat})",
                           "id": f"{metric.lower()}_{stat.lower()}"}]]}
    return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": props}


def _gpu_widget(title: str, metric: str, stat: str, x: int, y: int, region: str, unit: str = "") -> Dict[str, Any]:
    props: Dict[str, Any] = {"title": title, "region": region, "view": "timeSeries", "stacked": False,
                             "metrics": [[_search(metric, stat, f"{metric} ({stat})")]], "period": 60}
    if unit == "Percent":
        props["yAxis"] = {"left": {"min": 0, "max": 100}}
    return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": props}


def body(region: str, state_machine_arn: str) -> Dict[str, Any]:
    """The dashboard: GPU utilisation/memory/power/temperature/clock by instance, GPU and job; executions."""
    widgets: List[Dict[str, Any]] = [
        _gpu_widget("GPU utilisation by instance, GPU and job (%)", "GPUUtilization", "Average", 0, 0, region,
                    "Percent"),
        _gpu_widget("GPU memory used (MiB)", "GPUMemoryUsed", "Maximum", 12, 0, region),
        _gpu_widget("GPU memory used (% of total)", "GPUMemoryUtilization", "Maximum", 0, 6, region, "Percent"),
        _gpu_widget("GPU power draw (W)", "GPUPowerDraw", "Average", 12, 6, region),
        _gpu_widget("GPU temperature (°C)", "GPUTemperature", "Maximum", 0, 12, region),
        _gpu_widget("GPU SM clock (MHz)", "GPUSMClock", "Average", 12, 12, region),
        {"type": "metric", "x": 0, "y": 18, "width": 12, "height": 6, "properties": {
            "title": "Prediction executions (succeeded, failed, timed out, aborted)", "region": region,
            "view": "timeSeries", "stat": "Sum", "period": 300,
            "metrics": [["AWS/States", m, "StateMachineArn", state_machine_arn]
                        for m in STATES_METRICS if m != "ExecutionTime"]}},
        {"type": "metric", "x": 12, "y": 18, "width": 12, "height": 6, "properties": {
            "title": "Execution time, submit to finish (ms)", "region": region, "view": "timeSeries",
            "period": 300, "metrics": [["AWS/States", "ExecutionTime", "StateMachineArn", state_machine_arn,
                                        {"stat": "p50"}],
                                       ["AWS/States", "ExecutionTime", "StateMachineArn", state_machine_arn,
                                        {"stat": "Maximum"}]]}},
        _platform_widget("Jobs entering each state (per 5 minutes)", "JobsEntered", "Sum", 300, 0, 24, region),
        _platform_widget("Failed jobs by stage (per hour)", "JobFailures", "Sum", 3600, 12, 24, region),
        _platform_widget("Batch queue depth (jobs per queue and status)", "QueueDepth", "Maximum", 60, 0, 30,
                         region),
        _platform_widget("Phase durations of succeeded jobs, MSA vs predict (s, hourly average)", "PhaseSeconds",
                         "Average", 3600, 12, 30, region),
        _platform_widget("CPU of the msa and predict jobs (vCPUs busy)", "StageCPUUsed", "Average", 60, 0, 36,
                         region),
        _platform_widget("Memory of the msa and predict jobs (MiB)", "StageMemoryUsed", "Maximum", 60, 12, 36,
                         region),
        _platform_widget("Cost per day of succeeded jobs, CPU and GPU phases (USD, list prices)", "JobCostUSD",
                         "Sum", 86400, 0, 42, region, view="bar"),
    ]
    return {"widgets": widgets}


# The idle-GPU alarm's series: one per predict job and instance, the busiest of the job's GPUs. A job may hold
# several GPUs and leave some idle on purpose (strategy best's final full run, and every other phase, uses one), so
# an alarm on the least busy GPU would fire for healthy jobs; the busiest one idle means the whole job is.
IDLE_GPU_GROUP = ("JobId", "InstanceId")


def idle_gpu_alarm(alarm_topic_arn: str | None = None) -> Dict[str, Any]:
    """Every GPU of a running predict job under 10 % for 15 minutes (the agent only publishes while one runs, so
    missing data means no job: notBreaching). As AWS::CloudWatch::Alarm properties."""
    alarm: Dict[str, Any] = {
        "AlarmName": "af2jobs-idle-gpu",
        "AlarmDescription": "Every GPU of a running predict job has been under 10 % utilisation for 15 minutes.",
        "ComparisonOperator": "LessThanThreshold",
        "Threshold": 10,
        "EvaluationPeriods": 15,
        "DatapointsToAlarm": 15,
        "TreatMissingData": "notBreaching",
        # Alarms cannot use SEARCH; a Metrics Insights query can, and with GROUP BY each job's series is a
        # contributor of its own (CloudWatch, "Create an alarm based on a Multi Time Series Metrics Insights query").
        "Metrics": [{
            "Id": "busiest", "Period": 60, "ReturnData": True, "Label": "busiest GPU of each predict job",
            "Expression": (f"SELECT MAX(GPUUtilization) FROM SCHEMA(\"{NAMESPACE}\", {', '.join(DIMENSIONS)}) "
                           f"GROUP BY {', '.join(IDLE_GPU_GROUP)}"),
        }],
    }
    if alarm_topic_arn:
        alarm["AlarmActions"] = [alarm_topic_arn]
    return alarm


TEMPLATE_LINE = "      DashboardBody: !Sub "


def template_line() -> str:
    """template.yaml's DashboardBody line: the body as compact JSON in a YAML double-quoted !Sub string."""
    text = json.dumps(body("${AWS::Region}", "${StateMachine}"), separators=(",", ":"))
    return TEMPLATE_LINE + '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sync_template(path: Path) -> bool:
    """Replace the template's one DashboardBody line with template_line(); True when it changed."""
    lines = path.read_text().split("\n")
    (index,) = [i for i, line in enumerate(lines) if line.startswith(TEMPLATE_LINE)]
    changed = lines[index] != template_line()
    lines[index] = template_line()
    path.write_text("\n".join(lines))
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the CloudWatch dashboard body.")
    parser.add_argument("--region")
    parser.add_argument("--state-machine-arn")
    parser.add_argument("--sync-template", type=Path, help="rewrite this template.yaml's DashboardBody line")
    args = parser.parse_args()
    if args.sync_template:
        print("updated" if sync_template(args.sync_template) else "already up to date", args.sync_template)
    elif args.region and args.state_machine_arn:
        print(json.dumps(body(args.region, args.state_machine_arn), indent=2))
    else:
        parser.error("give --region and --state-machine-arn, or --sync-template PATH")


if __name__ == "__main__":
    main()
