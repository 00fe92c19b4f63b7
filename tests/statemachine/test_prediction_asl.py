"""The REAL state machine executed by moto, with the REAL Lambda handlers and the REAL Batch entrypoint and stages
against moto's S3 and DynamoDB (tests/statemachine/sfn_support.py says what stands in for what moto cannot do). One
path of the definition per test; the last test checks that together they entered every state.

In the containers, the test marked pipeline runs the real pipeline (the tiny model on the small database), end to
end; the others a fake stage runner (tests/statemachine/fake_stages.py), whose switches make a stage fail the way
the pipeline fails or wait to be cancelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from af2jobs.awsrun import contract as batch_codes
from af2jobs.adapters.aws.workarea import S3MsaCache, S3Objects
from af2jobs.awsrun import validate
from af2jobs import cost, errors, jobrun
from af2jobs.models import Job, JobState, Principal
from af2jobs.request import JobRequest
from af2jobs.layout import input_key
from af2jobs.service import JobService
from af2jobs.pipeline.databases import NO_DATABASE
from tests.conftest import NO_JAX, UBIQUITIN
from tests.statemachine.fake_stages import FakeBatchStages
from tests.statemachine.sfn_support import DEFINITION, ROOT, Platform, platform

S = JobState
ANN = Principal("ann")
HAPPY = ["Validate", "MsaCached?", "StartMsa", "RunMsa", "StartPrediction", "RunPrediction", "MarkSucceeded",
         "NotifySuccess", "Succeeded"]
# The states every execution of this module entered (the last test compares them with the definition's).
ENTERED: set[str] = set()
PATH_TESTS: set[str] = set()


@pytest.fixture
def aws(request, monkeypatch, tmp_path, demo_db_root, shared_cache) -> Iterator[Platform]:
    """The platform; its containers run the real pipeline for a test marked pipeline, else the fake stages."""
    stages = None if request.node.get_closest_marker("pipeline") else FakeBatchStages()
    with platform(monkeypatch, tmp_path, demo_db_root, shared_cache, stages) as world:
        yield world
        for submission in world.fair_share.submissions:  # on every path, the larger-queue retry's too
            assert submission.tags == {"af2jobs:stack": "af2jobs"}, submission
            assert submission.share_identifier == validate.share_identifier(ANN.owner), submission
        for execution in world.sfn.list_executions(stateMachineArn=world.state_machine_arn)["executions"]:
            ENTERED.update(world.states(execution["name"]))
    PATH_TESTS.add(request.node.name)


class NotStarted:
    """An orchestrator that starts nothing, for jobs whose execution a test starts itself."""

    def start(self, job: Job) -> None:
        pass

    def cancel(self, job: Job) -> None:
        pass


def request(**fields: Any) -> JobRequest:
    body = {"fasta": "ubq", "sequence": UBIQUITIN, "model_names": ["model_1"], "strategy": "best",
            "models_to_relax": "none", **fields}
    return JobRequest.parse(body)


def submit(aws: Platform, **fields: Any) -> Job:
    """A job submitted through the real service: stored, and its execution started by the real orchestrator."""
    return aws.services.service.submit(ANN, request(**fields))


def submit_not_started(aws: Platform, **fields: Any) -> tuple[Job, JobService]:
    s = aws.services
    service = JobService(s.repo, s.store, NotStarted(), s.notifier, s.settings)
    return service.submit(ANN, request(**fields)), service


def finish(aws: Platform, job: Job, status: str) -> tuple[Job, dict[str, Any]]:
    execution = aws.wait_execution(job.id)
    assert execution["status"] == status, (execution, aws.states(job.id), aws.services.repo.get(job.id).error)
    aws.runner.join()
    return aws.services.repo.get(job.id), execution


def events_of(aws: Platform, job: Job) -> dict[str, dict[str, Any]]:
    return {m["data"]["event"]: m for m in aws.messages() if m["data"]["job_id"] == job.id}


def batch_artifacts(job: Job) -> dict[str, str]:
    return {k.removeprefix("aws:batch:"): v for k, v in job.artifacts.items() if k.startswith("aws:batch:")}


# The entrypoint tells a GPU out of memory by JAX's own error type, from a loaded jax: the suite without JAX
# (make test-fast) leaves these tests out.
needs_jax = pytest.mark.skipif(bool(os.environ.get(NO_JAX)), reason="raises JAX's out-of-memory error: loads JAX")


def out_of_gpu_memory() -> Exception:
    """XLA's allocation failure, as the model raises it where it runs out of GPU memory."""
    import jax

    return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")


# ==============================================================================================================
# Paths through the state machine


@pytest.mark.pipeline
def test_a_job_goes_through_msa_and_prediction_to_succeeded_with_its_results_in_s3(aws: Platform) -> None:
    job = submit(aws, gpu=2, comment="<script>alert(1)</script>")
    done, _ = finish(aws, job, "SUCCEEDED")

    assert aws.states(job.id) == HAPPY
    assert done.state is S.SUCCEEDED and done.error is None
    assert {"VALIDATING", "MSA", "PREDICTING", "SUCCEEDED"} <= set(done.phases)
    assert done.progress.stage == "done" and "ubq: best model_1" in done.progress.message
    assert {"msa_s", "predict_s", "publish_s"} <= set(done.cost)
    assert done.artifacts["aws:execution_arn"] == aws.execution_arn(job.id)

    # The files, where the job's artifacts say.
    pdb = aws.get_object(done.artifacts["ubq/ranked_0.pdb"]).decode()
    assert done.artifacts["ubq/ranked_0.pdb"] == f"jobs/{job.id}/output/ubq/ranked_0.pdb"
    assert pdb.startswith("ATOM") or "\nATOM" in pdb
    predictions = json.loads(aws.get_object(f"jobs/{job.id}/output/predictions.json"))
    assert [r["best_model"] for r in predictions["records"]] == ["model_1"]
    log = aws.get_object(f"jobs/{job.id}/log.txt").decode()
    assert "msa: msa stage done" in log and "predict: published" in log

    # Two Batch jobs, recorded on the job; the prediction sized for 2 GPUs on the queue Validate chose.
    msa, predict = aws.runs(job.id)
    assert (msa.stage, msa.queue, msa.exit_code) == ("msa", "af2jobs-msa", 0)
    assert (predict.stage, predict.queue, predict.exit_code) == ("predict", "af2jobs-low", 0)
    assert predict.resource_requirements == [{"type": "GPU", "value": "2"}, {"type": "VCPU", "value": "16"},
                                             {"type": "MEMORY", "value": "61440"}]
    assert batch_artifacts(done) == {msa.batch_job_id: "msa", predict.batch_job_id: "predict"}
    assert [j["status"] for j in aws.batch_jobs(job.id)] == ["SUCCEEDED", "SUCCEEDED"]

    # Both submitted to the fair-share queues under the owner's share identifier (which Validate derived once), and
    # tagged as this stack's, which the roles' TerminateJob grants require.
    submitted = [(s.job_name, s.queue, s.share_identifier, s.tags) for s in aws.fair_share.submissions]
    share, tags = validate.share_identifier("ann"), {"af2jobs:stack": "af2jobs"}
    assert submitted == [(f"msa-{job.id}", "af2jobs-msa", share, tags), (f"predict-{job.id}", "af2jobs-low", share, tags)]

    # The MSA job's work dir, tagged for expiry, and its MSA in the shared cache with the databases' manifest.
    work = aws.keys(f"jobs/{job.id}/work/ubq/")
    assert f"jobs/{job.id}/work/ubq/features.pkl" in work
    tags = aws.s3.get_object_tagging(Bucket=aws.bucket, Key=work[0])["TagSet"]
    assert tags == [{"Key": "af2jobs:class", "Value": "work"}]
    assert [k for k in aws.keys("cache/msa/") if k.endswith("/report.json")]
    assert {d["name"] for d in json.loads(aws.get_object("cache/msa/databases.json"))} >= {"uniref90"}
    # Validate, which cannot see the databases, finds that MSA from the manifest: the real search keyed it as
    # Validate keys it (the other tests' fake stages key their entries with Validate's own function).
    records = jobrun.read_records(aws.services.store, done, aws.services.settings.max_length)
    run = jobrun.run_config_for(done.request, aws.services.settings, gpu=True)[0]
    assert validate.msa_cached(S3MsaCache(S3Objects(aws.bucket)), records, aws.services.settings, run)

    # Submitted, then succeeded, with the best model and a link to the structure.
    messages = events_of(aws, job)
    assert set(messages) == {"submitted", "succeeded"}
    succeeded = messages["succeeded"]
    assert succeeded["attributes"] == {"state": "SUCCEEDED", "owner": "ann", "event": "succeeded"}
    assert succeeded["data"]["records"][0]["best_model"] == "model_1"
    assert any(link["key"].endswith("ubq/ranked_0.pdb") for link in succeeded["data"]["links"])

    # The cost: the two Batch jobs' run times (StartedAt to StoppedAt, from RunMsa's and RunPrediction's
    # results) priced on the MSA instance and on 2 GPUs of the queue Validate chose; in the message too.
    seconds = {j["jobName"].split("-")[0]: (j["stoppedAt"] - j["startedAt"]) / 1000 for j in aws.batch_jobs(job.id)}
    assert done.cost["msa_batch_s"] == pytest.approx(seconds["msa"])
    assert done.cost["predict_batch_s"] == pytest.approx(seconds["predict"])
    assert done.cost["usd"] == cost.job_cost({}, cpu_s=seconds["msa"], gpu_s=seconds["predict"], queue="low", gpus=2)
    assert done.cost["usd"]["gpu_instance"] == "g5.2xlarge" and done.cost["usd"]["total_usd"] > 0
    assert succeeded["data"]["cost_usd"] == done.cost["usd"]
    assert "gpu" not in done.cost  # no GPU agent ran here (tests/functional/test_job_metrics.py has one)
    # The record's report: the comment as text, its stages priced on 2 GPUs of the queue's instance.
    page = aws.get_object(done.artifacts["ubq/report.html"]).decode()
    assert "<script>alert(1)" not in page and "Comment: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "on 2 GPU(s) of g5.2xlarge" in page and "ESTIMATE" not in page


def test_a_second_job_with_the_same_sequence_takes_its_msa_from_the_cache_and_skips_run_msa(aws: Platform) -> None:
    first = submit(aws)
    finish(aws, first, "SUCCEEDED")
    second = submit(aws, fasta="ubq-again")
    done, _ = finish(aws, second, "SUCCEEDED")

    assert aws.states(second.id) == ["Validate", "MsaCached?", "StartPrediction", "RunPrediction",
                                     "MarkSucceeded", "NotifySuccess", "Succeeded"]
    assert [r.stage for r in aws.runs(second.id)] == ["predict"]
    # The state graph still passes through MSA, and the prediction's timings say where its MSA came from.
    assert {"VALIDATING", "MSA", "PREDICTING", "SUCCEEDED"} <= set(done.phases)
    timings = json.loads(aws.get_object(f"jobs/{second.id}/output/ubq-again/timings.json"))
    assert timings["msa"]["cache"] == "hit"
    assert f"jobs/{second.id}/output/ubq-again/ranked_0.pdb" in aws.keys(f"jobs/{second.id}/output/")


def test_msa_mode_mmseqs2_needs_no_cpu_msa_job_the_gpu_job_searches_and_predicts(aws: Platform) -> None:
    first = submit(aws, fasta="ubq-mm", msa_mode="mmseqs2")
    finish(aws, first, "SUCCEEDED")
    assert aws.states(first.id) == ["Validate", "MsaCached?", "StartPrediction", "RunPrediction",
                                    "MarkSucceeded", "NotifySuccess", "Succeeded"]
    assert [r.stage for r in aws.runs(first.id)] == ["predict"]  # one Batch job: no MSA queue, no MSA instance
    timings = json.loads(aws.get_object(f"jobs/{first.id}/output/ubq-mm/timings.json"))
    assert {s["database"] for s in timings["msa"]["searches"]} == {"mmseqs_uniref", "mmseqs_env", "pdb70"}
    assert timings["msa"]["cache"] == "miss"  # searched in the GPU job (the harness's CPU stands in for its GPU)
    versions = json.loads(aws.get_object(f"jobs/{first.id}/output/ubq-mm/versions.json"))
    assert versions["run_config"]["msa_mode"] == "mmseqs2"
    # The GPU job shared its search through the S3 cache, keyed as Validate keys it: a second job finds it.
    second = submit(aws, fasta="ubq-mm-again", msa_mode="mmseqs2")
    finish(aws, second, "SUCCEEDED")
    assert [r.stage for r in aws.runs(second.id)] == ["predict"]
    again = json.loads(aws.get_object(f"jobs/{second.id}/output/ubq-mm-again/timings.json"))
    assert again["msa"]["cache"] == "hit" and again["msa"]["searches"] == timings["msa"]["searches"]


# Two ribosomal proteins of two bacteria: their UniProt hits in the demo database share species, so rows pair.
L29 = "MNAAELRKLSAEQLKDKLAESRKELFDMRFRHATAQLEKTSNLPATKRDIARILTILKEKG"
L35 = "MPKMKTKSALKKRVKVTATGKIKREQAFRSHLAQNKTKKQKRQSRKASFMKRSDFKRFKFML"


def test_a_complex_goes_through_validate_the_msa_job_and_the_gpu_job_as_one_multimer(aws: Platform) -> None:
    job = submit(aws, fasta="l29-l35", sequence=f">l29\n{L29}\n>l35\n{L35}\n", model_preset="multimer",
                 num_multimer_predictions_per_model=2)
    done, _ = finish(aws, job, "SUCCEEDED")

    assert aws.states(job.id) == HAPPY and done.state is S.SUCCEEDED
    predictions = json.loads(aws.get_object(f"jobs/{job.id}/output/predictions.json"))
    assert predictions["mode"] == "multimer"
    (record,) = predictions["records"]
    assert (record["name"], record["length"]) == ("l29-l35", len(L29) + len(L35))
    assert [c["chain"] for c in record["chains"]] == ["A", "B"] and record["iptm"] is not None
    # The MSA job searched each chain (UniProt too, for pairing); the GPU job ran model_1 with 2 seeds.
    timings = json.loads(aws.get_object(f"jobs/{job.id}/output/l29-l35/timings.json"))
    assert {s["database"] for s in timings["msa"]["searches"]} >= {"A:uniref90", "A:uniprot", "B:uniprot"}
    assert [e["chain"] for e in timings["msa"]["entries"]] == ["A", "B"]
    ranking = json.loads(aws.get_object(f"jobs/{job.id}/output/l29-l35/ranking_debug.json"))
    assert set(ranking["screen"]) == {"model_1_multimer_v3_pred_0", "model_1_multimer_v3_pred_1"}
    pdb = aws.get_object(done.artifacts["l29-l35/ranked_0.pdb"]).decode()
    assert {line[21] for line in pdb.splitlines() if line.startswith("ATOM")} == {"A", "B"}
    # Each chain's MSA is its own entry of the shared cache.
    assert len([k for k in aws.keys("cache/msa/") if k.endswith("/report.json")]) >= 2
    msa, predict = aws.runs(job.id)
    assert (msa.stage, predict.stage, predict.queue) == ("msa", "predict", "af2jobs-low")


def test_an_invalid_input_fails_the_job_with_the_reason_and_a_failure_message(aws: Platform) -> None:
    job, _ = submit_not_started(aws)
    # The stored input no longer parses (an object replaced after the submit): Validate reads it again.
    aws.services.store.put_bytes(input_key(job.id), b">ubq\nMQIFVKTLTG 1234 KTITLEV\n")
    aws.services.orchestrator.start(job)
    failed, execution = finish(aws, job, "FAILED")

    assert aws.states(job.id) == ["Validate", "MarkFailed", "NotifyFailure", "Failed"]
    assert execution["error"] == "JobFailed"
    assert failed.state is S.FAILED
    assert (failed.error.type, failed.error.stage) == ("InvalidJob", "validating")
    assert "line 2" in failed.error.message
    assert aws.runs(job.id) == []
    message = events_of(aws, job)["failed"]
    assert message["data"]["error"]["type"] == "InvalidJob" and message["attributes"]["state"] == "FAILED"


def test_a_failed_msa_job_is_run_once_more_and_the_job_succeeds(aws: Platform) -> None:
    # The first MSA container finds no database, as on an instance whose file system is missing: the stage's error.
    aws.stages.fail_with(errors.StageError(NO_DATABASE, stage="msa"), on="msa")
    job = submit(aws)
    done, _ = finish(aws, job, "SUCCEEDED")

    assert aws.states(job.id) == HAPPY
    runs = aws.runs(job.id)
    assert [(r.stage, r.exit_code) for r in runs] == [("msa", 1), ("msa", 0), ("predict", 0)]
    assert aws.retry_waits == [60]  # the definition's interval before the second MSA job
    report = json.loads(aws.get_object(f"jobs/{job.id}/work/.batch/{runs[0].batch_job_id}.json"))
    assert report["stage"] == "msa" and report["type"] == "StageError"
    assert "no sequence database" in report["message"]
    assert [j["status"] for j in aws.batch_jobs(job.id)] == ["FAILED", "SUCCEEDED", "SUCCEEDED"]
    assert done.state is S.SUCCEEDED and done.error is None
    assert "FAILED in msa" in aws.get_object(f"jobs/{job.id}/log.txt").decode()


@needs_jax
def test_out_of_gpu_memory_runs_the_prediction_again_on_the_next_larger_queue(aws: Platform) -> None:
    aws.stages.fail_with(out_of_gpu_memory(), on="predict")  # on the first queue, low
    job = submit(aws, que="low")
    done, _ = finish(aws, job, "SUCCEEDED")

    assert aws.states(job.id) == ["Validate", "MsaCached?", "StartMsa", "RunMsa", "StartPrediction",
                                  "RunPrediction", "CheckPredictFailure", "LargerQueue?", "RunPredictionLarger",
                                  "MarkSucceeded", "NotifySuccess", "Succeeded"]
    msa, low, mid = aws.runs(job.id)
    assert (low.queue, low.exit_code) == ("af2jobs-low", batch_codes.EXIT_GPU_OUT_OF_MEMORY)
    assert (mid.queue, mid.exit_code) == ("af2jobs-mid", 0)
    failed_job = aws.batch_jobs(job.id)[1]
    assert failed_job["status"] == "FAILED" and failed_job["container"]["exitCode"] == 75
    assert batch_artifacts(done) == {msa.batch_job_id: "msa", low.batch_job_id: "predict",
                                     mid.batch_job_id: "predict"}
    assert done.state is S.SUCCEEDED
    assert f"jobs/{job.id}/output/ubq/ranked_0.pdb" in aws.keys(f"jobs/{job.id}/output/")


@needs_jax
def test_out_of_gpu_memory_on_the_largest_queue_fails_the_job_as_gpu_out_of_memory(aws: Platform) -> None:
    aws.stages.fail_with(out_of_gpu_memory(), on="predict")  # on the largest queue, p4
    job = submit(aws, que="p4")
    failed, execution = finish(aws, job, "FAILED")

    assert aws.states(job.id)[-6:] == ["RunPrediction", "CheckPredictFailure", "LargerQueue?", "MarkFailed",
                                       "NotifyFailure", "Failed"]
    assert [(r.queue, r.exit_code) for r in aws.runs(job.id)][-1] == ("af2jobs-p4", 75)
    assert (failed.error.type, failed.error.stage) == ("GpuOutOfMemory", "predict")
    assert "af2jobs-p4" in failed.error.message
    assert events_of(aws, job)["failed"]["data"]["error"]["type"] == "GpuOutOfMemory"


def test_cancelling_during_the_prediction_stops_the_execution_and_terminates_the_batch_job(aws: Platform) -> None:
    aws.stages.block(on="predict")  # a prediction that recycles until it is cancelled
    job = submit(aws)
    aws.wait_for(lambda: (j := aws.services.repo.get(job.id)).state is S.PREDICTING and j.progress is not None
                 and "recycle" in j.progress.message, timeout=180, message="the prediction's recycles")
    cancelled = aws.services.service.cancel(ANN, job.id)
    execution = aws.wait_execution(job.id)
    aws.runner.join()

    # The service answers CANCELLING; the orchestrator then stops the compute and moves the job on.
    assert cancelled.state is S.CANCELLING and aws.services.repo.get(job.id).state is S.CANCELLED
    assert execution["status"] == "ABORTED"
    predict = aws.runs(job.id)[-1]
    assert (predict.stage, predict.exit_code) == ("predict", batch_codes.EXIT_CANCELLED)
    described = aws.batch_jobs(job.id)[-1]
    assert described["status"] == "FAILED" and described["statusReason"] == "cancelled through af2jobs"
    assert aws.keys(f"jobs/{job.id}/output/") == []
    assert "stopped: the job was cancelled" in aws.get_object(f"jobs/{job.id}/log.txt").decode()
    assert "succeeded" not in events_of(aws, job)


def test_a_job_cancelled_before_its_execution_starts_ends_in_cancelled_without_compute(aws: Platform) -> None:
    job, service = submit_not_started(aws)
    assert service.cancel(ANN, job.id).state is S.CANCELLED  # QUEUED: cancelled at once
    aws.services.orchestrator.start(job)  # the execution that the submit had started, a moment late
    _, execution = finish(aws, job, "SUCCEEDED")

    assert aws.states(job.id) == ["Validate", "Cancelled"]
    assert aws.services.repo.get(job.id).state is S.CANCELLED
    assert aws.runs(job.id) == []
    assert "failed" not in events_of(aws, job)


# ==============================================================================================================
# The Batch state-change events and the entrypoint as a program


def _event(job_id: str, stage: str, status: str, **detail: Any) -> dict[str, Any]:
    event = json.loads((ROOT / "tests/data/events/batch_job_state_change.json").read_text())
    d = event["detail"]
    d.update({"jobName": f"{stage}-{job_id}", "status": status, "parameters": {"job_id": job_id}, **detail})
    d["container"]["command"] = ["python", "-m", "af2jobs.awsrun.batch", stage, "--job-id", job_id]
    return event


def test_batch_state_change_events_record_the_batch_job_and_its_progress_on_the_job(aws: Platform) -> None:
    from tests.statemachine.sfn_support import LambdaContext

    handler = aws.handlers["events"].handler
    job, _ = submit_not_started(aws)
    repo = aws.services.repo
    repo.transition(job.id, {S.QUEUED}, S.VALIDATING)
    repo.transition(job.id, {S.VALIDATING}, S.MSA)

    result = handler(_event(job.id, "msa", "RUNNABLE"), LambdaContext("events"))
    assert result == {"recorded": True, "job_id": job.id, "stage": "msa"}
    now = repo.get(job.id)
    assert batch_artifacts(now) == {"4c7599ae-0a82-49aa-ba5a-4727fcce14a8": "msa"}
    assert now.progress.message == "msa Batch job 4c7599ae-0a82-49aa-ba5a-4727fcce14a8 RUNNABLE on queue af2jobs-msa"

    # A predict job's event while the job is still in MSA: recorded, but the MSA's progress stays.
    late = _event(job.id, "predict", "FAILED", jobId="0b1c", statusReason="Essential container in task exited")
    late["detail"]["container"]["exitCode"] = 75
    assert handler(late, LambdaContext("events"))["recorded"] is True
    after = repo.get(job.id)
    assert batch_artifacts(after)["0b1c"] == "predict" and after.progress == now.progress

    # Only the name says which job (no parameters): still found. Another program's job: ignored.
    by_name = _event(job.id, "msa", "SUCCEEDED", jobId="9f9f", parameters={})
    assert handler(by_name, LambdaContext("events"))["recorded"] is True
    other = json.loads((ROOT / "tests/data/events/batch_job_state_change.json").read_text())
    other["detail"].update(jobName="nightly-report", parameters={})
    other["detail"]["container"]["command"] = ["sleep", "600"]
    assert handler(other, LambdaContext("events")) == {"recorded": False}
    assert set(batch_artifacts(repo.get(job.id))) == {"4c7599ae-0a82-49aa-ba5a-4727fcce14a8", "0b1c", "9f9f"}


def test_the_batch_entrypoint_runs_as_a_program_and_documents_its_exit_codes() -> None:
    result = subprocess.run([sys.executable, "-m", "af2jobs.awsrun.batch", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "{msa,predict}" in result.stdout and "75 GPU out of memory" in result.stdout
    wrong = subprocess.run([sys.executable, "-m", "af2jobs.awsrun.batch", "align", "--job-id", "x"], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert wrong.returncode == batch_codes.EXIT_USAGE


# ==============================================================================================================
# Coverage of the definition


def _all_states(definition: dict[str, Any]) -> set[str]:
    return set(definition["States"])


def test_together_the_tests_above_enter_every_state_of_the_definition(request) -> None:
    module = request.node.module
    path_tests = {name for name in dir(module) if name.startswith("test_") and
                  "aws" in getattr(module, name).__code__.co_varnames[:getattr(module, name).__code__.co_argcount]}
    if not path_tests <= PATH_TESTS:
        pytest.skip(f"run the whole module to check coverage; not run: {sorted(path_tests - PATH_TESTS)}")
    missing = _all_states(json.loads(DEFINITION.read_text())) - ENTERED
    assert not missing, f"no test enters {sorted(missing)}"
