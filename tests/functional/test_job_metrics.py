"""What the AWS path measures about a job, against moto: the GPU agent's summary from S3 onto the DynamoDB job
record, the dollars of the Batch jobs' run times, and the platform metrics (EMF lines, PutMetricData)."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.unit.test_gpumon as gpumon_tests
from af2jobs import cost
from af2jobs.awsrun import jobstate
from af2jobs.awsrun.parts import TaskParts
from af2jobs.adapters.aws import DynamoJobRepository, S3ArtifactStore
from af2jobs.adapters.aws.cloudwatch import METRICS, NAMESPACE, EmfMetrics, PutMetricData, emf_document
from af2jobs.models import Job, JobState
from af2jobs.request import JobRequest
from monitoring import gpumon
from tests.functional import moto_support

S = JobState
BUCKET = "af2-artifacts"
REQUEST = JobRequest.parse({"fasta": "ubiquitin", "sequence": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQ"})
PLAN = {"queue": "low", "queue_arn": "arn:aws:batch:us-east-1:123456789012:job-queue/af2jobs-low",
        "next_queue": "mid", "next_queue_arn": "arn:aws:batch:us-east-1:123456789012:job-queue/af2jobs-mid", "gpu": 2}


class RecordedMetrics:
    def __init__(self) -> None:
        self.data: list[tuple[str, float, dict[str, str]]] = []

    def put(self, name: str, value: float, **dimensions: str) -> None:
        emf_document(name, value, dimensions)  # declared, with its declared dimensions
        self.data.append((name, value, dimensions))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with moto_support.moto_aws(monkeypatch):
        yield


@pytest.fixture
def repo(aws: None) -> DynamoJobRepository:
    return moto_support.jobs_repo()


@pytest.fixture
def store(aws: None) -> S3ArtifactStore:
    return moto_support.artifact_store(BUCKET)


def predicting_job(repo: DynamoJobRepository, store: S3ArtifactStore) -> Job:
    """A job whose prediction has published its predictions.json, as the predict stage leaves it."""
    job = repo.create(Job(owner="ann", request=REQUEST))
    for before, to in ((S.QUEUED, S.VALIDATING), (S.VALIDATING, S.MSA), (S.MSA, S.PREDICTING)):
        repo.transition(job.id, {before}, to)
    key = f"jobs/{job.id}/output/predictions.json"
    store.put_bytes(key, json.dumps({"records": [{"name": "ubq", "best_model": "model_1", "mean_plddt": 50.0,
                                                   "ptm": None}]}).encode())
    return repo.update(job.id, artifacts={"predictions.json": key},
                       cost={"msa_s": 500.0, "predict_s": 3000.0, "publish_s": 100.0})


def parts(repo: DynamoJobRepository, store: S3ArtifactStore, metrics: Any) -> TaskParts:
    # mark_succeeded and mark_failed use the repository, the store and the metrics only.
    return TaskParts(None, repo, store, None, None, None, metrics)  # type: ignore[arg-type]


def _run_agent(monkeypatch: pytest.MonkeyPatch, job_id: str) -> dict[str, Any]:
    """monitoring/gpumon.py as the entrypoint runs it on AWS, over a fake NVML: it watches a short command and
    puts its summary at s3://<bucket>/jobs/<id>/output/gpu_summary.json."""
    nvml = gpumon_tests.FakeNvml([[80, 20], [100, 40], [90, 30]])
    reader = gpumon.NvmlReader
    monkeypatch.setattr(gpumon, "NvmlReader", lambda: reader(nvml))
    uri = f"s3://{BUCKET}/jobs/{job_id}/output/gpu_summary.json"
    code = gpumon.main(["--job-id", job_id, "--no-cloudwatch", "--interval", "0.05", "--s3-uri", uri, "--",
                        sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert code == 0
    return json.loads(moto_support.client("s3").get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read())


def test_the_gpu_agents_summary_and_the_batch_jobs_cost_end_up_on_the_job_record(
        monkeypatch: pytest.MonkeyPatch, repo: DynamoJobRepository, store: S3ArtifactStore) -> None:
    job = predicting_job(repo, store)
    summary = _run_agent(monkeypatch, job.id)
    assert summary["max_utilization_pct"] == 100 and summary["peak_memory_mib"] == 2000.0

    metrics = RecordedMetrics()
    # RunMsa's and RunPredictionLarger's results (Batch job descriptions, PascalCase as Step Functions has them):
    # a 10-minute MSA job and a 1-hour prediction on the next larger queue after an out-of-memory.
    batch = {"msa": {"StartedAt": 1_000, "StoppedAt": 601_000, "JobQueue": "arn:...:job-queue/af2jobs-msa"},
             "predict": {"StartedAt": 5_000, "StoppedAt": 3_605_000, "JobQueue": PLAN["next_queue_arn"]}}
    out = jobstate.job_state(parts(repo, store, metrics),
                           {"action": "succeeded", "job_id": job.id, "batch": batch, "plan": PLAN})
    assert out == {"state": "SUCCEEDED"}

    done = repo.get(job.id)  # read back from DynamoDB
    assert done.cost["gpu"] == summary and done.artifacts["gpu_summary.json"].endswith("/output/gpu_summary.json")
    assert done.cost["msa_batch_s"] == 600.0 and done.cost["predict_batch_s"] == 3600.0
    assert done.cost["msa_s"] == 500.0  # the stages' own measurements stay
    usd = done.cost["usd"]
    assert usd == cost.job_cost({}, cpu_s=600.0, gpu_s=3600.0, queue="mid", gpus=2)
    # One hour on 2 GPUs of the mid queue's g6e.2xlarge (1 GPU: the share caps at the whole instance).
    assert usd["gpu_usd"] == pytest.approx(cost.PRICES["g6e.2xlarge"].usd_per_hour)
    assert usd["cpu_usd"] == pytest.approx(cost.PRICES["m6i.2xlarge"].usd_per_hour / 6)
    # The API's job detail is the record's public view.
    assert done.to_public()["cost"]["gpu"]["mean_utilization_pct"] == summary["mean_utilization_pct"]

    assert metrics.data == [
        ("JobsEntered", 1, {"State": "SUCCEEDED"}),
        ("PhaseSeconds", 600.0, {"Phase": "msa"}), ("PhaseSeconds", 3600.0, {"Phase": "predict"}),
        ("JobCostUSD", usd["cpu_usd"], {"Phase": "cpu"}), ("JobCostUSD", usd["gpu_usd"], {"Phase": "gpu"}),
    ]


def test_without_batch_times_or_a_summary_the_stages_seconds_are_priced(
        repo: DynamoJobRepository, store: S3ArtifactStore) -> None:
    job = predicting_job(repo, store)
    jobstate.mark_succeeded(parts(repo, store, RecordedMetrics()),
                          {"job_id": job.id, "batch": {"predict": {"Status": "SUCCEEDED"}}, "plan": PLAN})
    done = repo.get(job.id)
    assert "gpu" not in done.cost and "gpu_summary.json" not in done.artifacts
    assert done.cost["usd"] == cost.job_cost({}, cpu_s=500.0, gpu_s=3100.0, queue="low", gpus=2)


def test_a_failed_job_counts_in_the_failures_by_stage(repo: DynamoJobRepository, store: S3ArtifactStore) -> None:
    job = predicting_job(repo, store)
    metrics = RecordedMetrics()
    failure = {"Error": "States.Timeout", "Cause": ""}
    jobstate.mark_failed(parts(repo, store, metrics), {"job_id": job.id, "failure": failure})
    assert metrics.data == [("JobsEntered", 1, {"State": "FAILED"}), ("JobFailures", 1, {"Stage": "predict"})]


def test_a_gpu_summary_upload_that_fails_does_not_change_the_exit_status(tmp_path: Path) -> None:
    class Refusing:
        def put_object(self, **kwargs: Any) -> None:
            raise RuntimeError("AccessDenied")

    assert not gpumon.upload_summary({"samples": 1}, "s3://b/k", client=Refusing())
    assert not gpumon.upload_summary({"samples": 1}, "not-a-uri", client=Refusing())


# ---------------------------------------------------------------------------------------------------------------
# Publishing


def test_emf_lines_declare_each_metric_with_exactly_its_dimensions() -> None:
    out = io.StringIO()
    EmfMetrics(out).put("QueueDepth", 3, Queue="af2jobs-low", Status="RUNNABLE")
    doc = json.loads(out.getvalue())
    assert doc["_aws"]["CloudWatchMetrics"] == [{"Namespace": NAMESPACE, "Dimensions": [["Queue", "Status"]],
                                                 "Metrics": [{"Name": "QueueDepth", "Unit": "Count"}]}]
    assert doc["QueueDepth"] == 3.0 and doc["Queue"] == "af2jobs-low" and doc["Status"] == "RUNNABLE"
    with pytest.raises(KeyError):
        EmfMetrics(out).put("Undeclared", 1, State="x")
    with pytest.raises(ValueError):
        EmfMetrics(out).put("JobsEntered", 1, Phase="x")


def test_put_metric_data_reaches_cloudwatch_and_never_raises(aws: None) -> None:
    client = moto_support.client("cloudwatch")
    PutMetricData(client).put("StageMemoryUsed", 2048, Stage="msa")
    listed = client.list_metrics(Namespace=NAMESPACE)["Metrics"]
    assert listed == [{"Namespace": NAMESPACE, "MetricName": "StageMemoryUsed",
                       "Dimensions": [{"Name": "Stage", "Value": "msa"}]}]

    class Throttled:
        def put_metric_data(self, **kwargs: Any) -> None:
            raise RuntimeError("Throttling")

    PutMetricData(Throttled()).put("StageCPUUsed", 1.5, Stage="predict")  # logged, not raised
    assert set(METRICS) >= {"JobsEntered", "QueueDepth", "StageCPUUsed"}
