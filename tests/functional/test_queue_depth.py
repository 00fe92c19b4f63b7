"""QueueDepthFunction (functions/queuedepth) over moto's Batch: one QueueDepth datum per queue and status."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from af2jobs.adapters.aws.cloudwatch import EmfMetrics
from af2jobs.adapters.aws.queuedepth import STATUSES, publish_queue_depth
from tests.functional import moto_support

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with moto_support.moto_aws(monkeypatch, config={"batch": {"use_docker": False}}):
        yield


class Pages:
    """ListJobs over scripted jobs: `per_page` summaries a page, as the real API pages them."""

    def __init__(self, jobs: dict[tuple[str, str], int], per_page: int = 2) -> None:
        self.jobs, self.per_page, self.calls = jobs, per_page, []

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_jobs"
        outer = self

        class Paginator:
            def paginate(self, jobQueue: str, jobStatus: str) -> Iterator[dict[str, Any]]:
                outer.calls.append((jobQueue, jobStatus))
                n = outer.jobs.get((jobQueue, jobStatus), 0)
                for start in range(0, max(n, 1), outer.per_page):
                    yield {"jobSummaryList": [{"jobId": str(i)} for i in range(start, min(n, start + outer.per_page))]}

        return Paginator()


def _emf(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_queue_and_status_gets_a_datum_counted_over_every_page() -> None:
    batch = Pages({("arn:low", "RUNNABLE"): 5, ("arn:msa", "RUNNING"): 1})
    out = io.StringIO()
    depth = publish_queue_depth(batch, EmfMetrics(out), {"msa": "arn:msa", "low": "arn:low"})
    assert depth["low"]["RUNNABLE"] == 5 and depth["msa"]["RUNNING"] == 1 and depth["low"]["RUNNING"] == 0
    lines = _emf(out)
    assert len(lines) == 2 * len(STATUSES)
    assert {(d["Queue"], d["Status"], d["QueueDepth"]) for d in lines} >= {("low", "RUNNABLE", 5.0),
                                                                          ("msa", "RUNNING", 1.0)}
    with pytest.raises(ValueError):
        publish_queue_depth(batch, EmfMetrics(out), {})


def test_the_handler_asks_moto_batch_for_the_scheduled_queues(aws: None, capsys: pytest.CaptureFixture) -> None:
    batch = moto_support.client("batch")
    role = moto_support.client("iam").create_role(RoleName="b", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    env = batch.create_compute_environment(computeEnvironmentName="compute", type="UNMANAGED", state="ENABLED",
                                           serviceRole=role)["computeEnvironmentArn"]
    queue = batch.create_job_queue(jobQueueName="af2jobs-low", state="ENABLED", priority=1,
                                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}])["jobQueueArn"]
    spec = importlib.util.spec_from_file_location("function_queuedepth", ROOT / "functions/queuedepth/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = SimpleNamespace(function_name="qd", memory_limit_in_mb=128, invoked_function_arn="arn:qd",
                              aws_request_id="r1")
    depth = module.handler({"queues": {"low": queue}}, context)
    assert depth == {"low": {status: 0 for status in STATUSES}}
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x and "QueueDepth" in x]
    assert {d["Status"] for d in lines} == set(STATUSES)
