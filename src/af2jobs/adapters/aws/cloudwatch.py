"""The platform's own CloudWatch metrics (namespace AF2Jobs, beside the GPU agent's in monitoring/gpumon.py).

    METRICS            every metric this package publishes: name -> (unit, dimension names). The dashboard
                       (monitoring/dashboard.py) may reference only these and gpumon.METRICS; a test holds it to that.
    EmfMetrics         Lambda functions: one CloudWatch embedded-metric-format line on stdout per datum. CloudWatch
                       Logs turns the Lambda's log lines into metrics: no API call, no IAM permission.
    PutMetricData      Batch containers (whose awslogs driver does not extract EMF): PutMetricData, best effort.

Who publishes what:
    JobsEntered      Count    State         a job entering VALIDATING, MSA, PREDICTING, SUCCEEDED or FAILED (the
                                            state machine's tasks, af2jobs.awsrun)
    JobFailures      Count    Stage         a job FAILED, by the stage it failed in (awsrun.jobstate)
    PhaseSeconds     Seconds  Phase         msa, predict: Batch run time (StartedAt to StoppedAt) of a SUCCEEDED
                                            job's stages (awsrun.jobstate)
    JobCostUSD       None     Phase         cpu, gpu: the dollars of a SUCCEEDED job's phases (af2jobs.cost)
    QueueDepth       Count    Queue,Status  Batch jobs per queue in SUBMITTED..RUNNING, every minute
                                            (functions/queuedepth, adapters/aws/queuedepth.py)
    StageCPUUsed     None     Stage         vCPUs busy in an msa or predict container, every minute (af2jobs.awsrun
                                            .usage: the container's cgroup CPU time)
    StageMemoryUsed  Megabytes Stage        memory of an msa or predict container, every minute (cgroup)

Dimensions are only these: a SEARCH over {AF2Jobs,<dimensions>} finds every series of a metric.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

log = logging.getLogger(__name__)

NAMESPACE = "AF2Jobs"
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "JobsEntered": ("Count", ("State",)),
    "JobFailures": ("Count", ("Stage",)),
    "PhaseSeconds": ("Seconds", ("Phase",)),
    "JobCostUSD": ("None", ("Phase",)),
    "QueueDepth": ("Count", ("Queue", "Status")),
    "StageCPUUsed": ("None", ("Stage",)),
    "StageMemoryUsed": ("Megabytes", ("Stage",)),
}


def _checked(name: str, dimensions: Mapping[str, str]) -> str:
    unit, names = METRICS[name]  # a KeyError here is a metric nobody declared (and the dashboard cannot know)
    if tuple(dimensions) != names:
        raise ValueError(f"{name} takes dimensions {names}, got {tuple(dimensions)}")
    return unit


def emf_document(name: str, value: float, dimensions: Mapping[str, str], timestamp_ms: int | None = None
                 ) -> dict[str, Any]:
    """One datum in CloudWatch's embedded metric format."""
    unit = _checked(name, dimensions)
    return {
        "_aws": {"Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
                 "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [list(dimensions)],
                                        "Metrics": [{"Name": name, "Unit": unit}]}]},
        **{k: str(v) for k, v in dimensions.items()},
        name: float(value),
    }


class EmfMetrics:
    """Metrics as EMF log lines. Written by hand rather than with Powertools Metrics, which adds a `service`
    dimension from POWERTOOLS_SERVICE_NAME: the dimension sets stay exactly METRICS's."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def put(self, name: str, value: float, **dimensions: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(emf_document(name, value, dimensions)) + "\n")
        stream.flush()


class PutMetricData:
    """Metrics through the PutMetricData API; a failure is logged, never raised (the job comes first)."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("cloudwatch")
        self.client = client

    def put(self, name: str, value: float, **dimensions: str) -> None:
        unit = _checked(name, dimensions)
        datum = {"MetricName": name, "Value": float(value), "Unit": unit,
                 "Dimensions": [{"Name": k, "Value": str(v)} for k, v in dimensions.items()]}
        try:
            self.client.put_metric_data(Namespace=NAMESPACE, MetricData=[datum])
        except Exception as exc:  # throttling, network, permissions: a metric is never worth a failed job
            log.warning("could not publish %s: %s", name, exc)


__all__ = ["EmfMetrics", "METRICS", "NAMESPACE", "PutMetricData", "emf_document"]
