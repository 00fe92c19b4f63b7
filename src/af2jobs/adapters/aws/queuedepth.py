"""Batch queue depth for the dashboard: how many jobs each of the stack's queues holds in each waiting or running
status, as the QueueDepth metric (dimensions Queue, Status). QueueDepthFunction runs it every minute; the
schedule's input names the queues (template.yaml), so the function needs no settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Batch's statuses of a job that has not finished: a queue full of RUNNABLE jobs and no RUNNING ones is a queue
# that gets no instances (a quota, a capacity shortage).
STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


class Metrics(Protocol):
    def put(self, name: str, value: float, **dimensions: str) -> None: ...


def count_jobs(batch: Any, queue: str, status: str) -> int:
    """Jobs of `queue` (name or ARN) in `status`, through every page of ListJobs."""
    return sum(len(page["jobSummaryList"])
               for page in batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=status))


def publish_queue_depth(batch: Any, metrics: Metrics, queues: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """For each queue (af2jobs name -> ARN), one QueueDepth datum per status; returns the counts."""
    if not queues:
        raise ValueError("the event names no queues: the schedule's input must be {\"queues\": {name: arn}}")
    depth = {}
    for name, arn in queues.items():
        depth[name] = {status: count_jobs(batch, arn, status) for status in STATUSES}
        for status, n in depth[name].items():
            metrics.put("QueueDepth", n, Queue=name, Status=status)
    log.info("queue depth: %s", depth)
    return depth


__all__ = ["STATUSES", "count_jobs", "publish_queue_depth"]
