"""What only the AWS adapters do, against moto: the DynamoDB layout and write shapes, S3 presigning and bulk
deletes, Step Functions start/stop with Batch termination, SNS messages read back from an SQS subscription.
(The behaviour they share with the local adapters is in test_repository_contract.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from af2jobs import errors
from af2jobs.adapters.aws import (
    DynamoApiKeyStore,
    DynamoJobRepository,
    S3ArtifactStore,
    SnsNotifier,
    StepFunctionsOrchestrator,
)
from af2jobs.adapters.aws.dynamodb import ALL_INDEX, OWNER_INDEX
from af2jobs.adapters.aws.sns import LINK_SECONDS, MAX_MESSAGE_BYTES, sns_payload
from af2jobs.notification import Notification, build
from af2jobs.adapters.aws.stepfunctions import EXECUTION_ARN, batch_job_artifact, execution_arn
from af2jobs.models import RUNNING, Job, JobError, JobEvent, JobState, Phase
from af2jobs.request import JobRequest
from tests.functional import moto_support
from tests.functional.moto_support import CallLog

S = JobState
REQUEST = JobRequest.parse({"fasta": "ubiquitin", "sequence": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQ"})


def make_job(owner: str = "ann", **fields: Any) -> Job:
    return Job(owner=owner, request=REQUEST, **fields)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Batch without Docker: moto's simple Batch accepts TerminateJob like the real service, running nothing.
    with moto_support.moto_aws(monkeypatch, config={"batch": {"use_docker": False}}):
        yield


@pytest.fixture
def dynamodb(aws: None) -> Any:
    return moto_support.client("dynamodb")


@pytest.fixture
def repo(dynamodb: Any) -> DynamoJobRepository:
    return moto_support.jobs_repo(dynamodb=dynamodb)


@pytest.fixture
def s3(aws: None) -> Any:
    return moto_support.client("s3")


@pytest.fixture
def store(s3: Any) -> S3ArtifactStore:
    return moto_support.artifact_store(s3=s3)


def scan(table: str) -> list[dict[str, Any]]:
    return moto_support.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]


# ==============================================================================================================
# DynamoDB: the table the template must declare


def test_jobs_table_has_the_documented_keys_and_indexes(repo: DynamoJobRepository) -> None:
    table = moto_support.client("dynamodb").describe_table(TableName=repo.table_name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {
        i["IndexName"]: ([(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]], i["Projection"]["ProjectionType"])
        for i in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        OWNER_INDEX: ([("owner", "HASH"), ("created_id", "RANGE")], "ALL"),
        ALL_INDEX: ([("entity", "HASH"), ("created_id", "RANGE")], "ALL"),
    }
    assert (OWNER_INDEX, ALL_INDEX) == ("owner-created-index", "created-index")


def test_keys_table_is_keyed_by_key_id(aws: None) -> None:
    keys = moto_support.key_store("keys")
    table = moto_support.client("dynamodb").describe_table(TableName="keys")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "key_id", "KeyType": "HASH"}]
    assert table.get("GlobalSecondaryIndexes", []) == [] and isinstance(keys, DynamoApiKeyStore)


# ==============================================================================================================
# DynamoDB: how the repository writes


def test_a_transition_is_one_conditional_update_item(repo: DynamoJobRepository, dynamodb: Any) -> None:
    job = repo.create(make_job())
    repo.transition(job.id, {S.QUEUED}, S.VALIDATING)
    repo.transition(job.id, {S.VALIDATING}, S.MSA)
    log = CallLog(dynamodb)
    moved = repo.transition(job.id, RUNNING, S.CANCELLING, progress={"stage": "cancel"})
    assert log.operations == ["UpdateItem"]  # no read before the write: the condition does the checking
    params = log.calls[0][1]
    names, values = params["ExpressionAttributeNames"], params["ExpressionAttributeValues"]
    condition = params["ConditionExpression"]
    for placeholder, name in names.items():
        condition = condition.replace(placeholder, name)
    for placeholder, value in sorted(values.items(), key=lambda kv: -len(kv[0])):  # ":v10" before ":v1"
        condition = condition.replace(placeholder, str(next(iter(value.values()))))
    assert condition == "attribute_exists(pk) AND state IN (MSA, PREDICTING, VALIDATING)"
    assert moved.state is S.CANCELLING and moved.phases["MSA"].ended_at == moved.phases["CANCELLING"].started_at


def test_an_idempotent_create_writes_job_and_key_in_one_transaction(
    repo: DynamoJobRepository, dynamodb: Any
) -> None:
    log = CallLog(dynamodb)
    job = repo.create(make_job("team#1", idempotency_key="retry-7"))
    assert log.operations == ["TransactWriteItems"]
    items = {i["pk"]["S"]: i for i in scan(repo.table_name)}
    assert set(items) == {f"JOB#{job.id}", "IDEM#team%231#retry-7"}
    assert items["IDEM#team%231#retry-7"]["job_id"] == {"S": job.id}
    # The key item has no index attributes, so listings never see it.
    assert "created_id" not in items["IDEM#team%231#retry-7"]
    assert [j.id for j in repo.list(None)[0]] == [job.id]
    repo.transition(job.id, {S.QUEUED}, S.CANCELLED)
    repo.delete(job.id)
    assert scan(repo.table_name) == []  # the key went with its job


def test_owner_and_key_cannot_collide_through_the_separator(repo: DynamoJobRepository) -> None:
    a = repo.create(make_job("a#b", idempotency_key="c"))
    b = repo.create(make_job("a", idempotency_key="b#c"))
    assert a.id != b.id


def test_a_record_too_large_for_dynamodb_is_refused_clearly(repo: DynamoJobRepository) -> None:
    body = "A" * 390_000
    huge = JobRequest.parse({"fasta": "big", "sequence": f">big\n{body}\n"})
    with pytest.raises(errors.PayloadTooLargeError, match="file_name"):
        repo.create(Job(owner="ann", request=huge))
    assert scan(repo.table_name) == []


def test_an_orphaned_key_item_is_released(repo: DynamoJobRepository) -> None:
    job = repo.create(make_job(idempotency_key="k"))
    # A record removed behind the repository's back (by hand, in the console) leaves its key item.
    moto_support.client("dynamodb").delete_item(TableName=repo.table_name, Key={"pk": {"S": f"JOB#{job.id}"}})
    again = repo.create(make_job(idempotency_key="k"))
    assert again.id != job.id and repo.get(again.id) == again


# ==============================================================================================================
# API keys: what the table holds


def test_only_a_salted_hash_is_stored(aws: None) -> None:
    keys = moto_support.key_store("keys")
    first, second = keys.create("ann"), keys.create("ann")
    items = scan("keys")
    stored = json.dumps(items, default=lambda b: b.hex() if isinstance(b, bytes) else str(b))
    for key in (first, second):
        key_id, secret = key[4:20], key[21:]
        assert key_id in stored  # the items really are in this dump
        assert secret not in stored and key not in stored
    assert all(len(i["salt"]["B"]) == 16 and len(i["hash"]["B"]) == 32 for i in items)
    assert items[0]["salt"] != items[1]["salt"]  # same owner, different salts


# ==============================================================================================================
# S3


def test_url_is_presigned_with_the_asked_expiry(store: S3ArtifactStore) -> None:
    store.put_bytes("jobs/abc/ranked_0.pdb", b"ATOM 1")
    url = store.url("jobs/abc/ranked_0.pdb", expires_s=90)
    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["90"] and "X-Amz-Signature" in query
    assert urlparse(url).path.endswith("/jobs/abc/ranked_0.pdb")
    assert requests.get(url, timeout=10).content == b"ATOM 1"
    with pytest.raises(errors.ValidationError):
        store.url("jobs/abc/ranked_0.pdb", expires_s=8 * 24 * 3600)  # past SigV4's 7 days


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-east-1"])  # ap-east-1 is opt-in
def test_presigned_urls_name_the_bucket_in_the_host_at_its_regional_endpoint(
        region: str, aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Virtual-hosted at the bucket's region: a new bucket's URLs work before its name reaches the global endpoint
    (which would redirect them and break the signature), and an opt-in region's bucket is served at all."""
    import boto3

    from af2jobs.adapters.aws.s3 import s3_client

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # the region as a Lambda's boto3 resolves it: AWS_REGION
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    for store in (S3ArtifactStore("af2-results", region=region), S3ArtifactStore("af2-results")):
        for url in (store.upload_url("input/ann/a.fasta", expires_s=60),
                    s3_client(region).generate_presigned_url(
                        "get_object", Params={"Bucket": "af2-results", "Key": "jobs/abc/ranked_0.pdb"})):
            parts = urlparse(url)
            assert parts.scheme == "https" and parts.netloc == f"af2-results.s3.{region}.amazonaws.com", url
            assert f"/{region}/s3/aws4_request" in parse_qs(parts.query)["X-Amz-Credential"][0]


def test_delete_prefix_pages_and_batches_over_a_thousand_objects(store: S3ArtifactStore, s3: Any) -> None:
    job = "a" * 32
    for i in range(1005):  # more than one ListObjectsV2 page and one DeleteObjects batch
        s3.put_object(Bucket=store.bucket, Key=f"jobs/{job}/msas/{i:04d}.a3m", Body=b"x")
    store.put_bytes(f"jobs/{job}b/input.fasta", b"neighbour")  # its id starts with the deleted one's
    log = CallLog(s3)
    assert store.delete_prefix(job) == 1005
    assert log.operations.count("DeleteObjects") == 2
    assert store.list("") == [f"jobs/{job}b/input.fasta"]


def test_listing_sees_only_the_store_top_levels(store: S3ArtifactStore) -> None:
    moto_support.client("s3").put_object(Bucket=store.bucket, Key="msa-cache/abc.a3m", Body=b"x")
    store.put_bytes("input/a.fasta", b">a\nMK\n")
    assert store.list("") == ["input/a.fasta"]


# ==============================================================================================================
# Step Functions + Batch


@pytest.fixture
def state_machine(aws: None) -> str:
    # A minimal machine that stays RUNNING long enough to be stopped.
    definition = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}
    return moto_support.client("stepfunctions").create_state_machine(
        name="af2-prediction",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{moto_support.ACCOUNT}:role/af2-states",
    )["stateMachineArn"]


@pytest.fixture
def sfn(aws: None) -> Any:
    return moto_support.client("stepfunctions")


@pytest.fixture
def batch(aws: None) -> Any:
    return moto_support.client("batch")


@pytest.fixture
def orchestrator(state_machine: str, repo: DynamoJobRepository, sfn: Any, batch: Any) -> StepFunctionsOrchestrator:
    return StepFunctionsOrchestrator(state_machine, repo, client=sfn, batch_client=batch)


def test_start_names_the_execution_after_the_job_and_records_its_arn(
    orchestrator: StepFunctionsOrchestrator, repo: DynamoJobRepository, state_machine: str
) -> None:
    job = repo.create(make_job())
    orchestrator.start(job)
    arn = repo.get(job.id).artifacts[EXECUTION_ARN]
    execution = moto_support.client("stepfunctions").describe_execution(executionArn=arn)
    assert execution["name"] == job.id and execution["status"] == "RUNNING"
    assert json.loads(execution["input"]) == {"job_id": job.id, "owner": "ann"}
    assert arn == execution_arn(state_machine, job.id)
    orchestrator.start(job)  # a retried start finds the same running execution
    assert repo.get(job.id).artifacts[EXECUTION_ARN] == arn


def test_cancel_stops_the_execution_terminates_batch_jobs_and_ends_cancelled(
    orchestrator: StepFunctionsOrchestrator, repo: DynamoJobRepository, sfn: Any, batch: Any
) -> None:
    job = repo.create(make_job())
    orchestrator.start(job)
    repo.transition(job.id, {S.QUEUED}, S.VALIDATING)
    repo.transition(job.id, {S.VALIDATING}, S.MSA)
    repo.update(job.id, artifacts={batch_job_artifact("msa-1111"): "msa", batch_job_artifact("pred-2222"): "predict"})
    cancelling = repo.transition(job.id, RUNNING, S.CANCELLING)
    sfn_log, batch_log = CallLog(sfn), CallLog(batch)

    orchestrator.cancel(cancelling)

    arn = repo.get(job.id).artifacts[EXECUTION_ARN]
    assert moto_support.client("stepfunctions").describe_execution(executionArn=arn)["status"] == "ABORTED"
    terminated = sorted(params["jobId"] for op, params in batch_log.calls if op == "TerminateJob")
    assert terminated == ["msa-1111", "pred-2222"]
    assert repo.get(job.id).state is S.CANCELLED
    assert "StopExecution" in sfn_log.operations

    sfn_log.clear()
    batch_log.clear()
    orchestrator.cancel(cancelling)  # again: nothing left to stop, and no error
    assert sfn_log.operations == [] and batch_log.operations == []


def test_cancel_refuses_a_job_that_is_not_cancelling(
    orchestrator: StepFunctionsOrchestrator, repo: DynamoJobRepository
) -> None:
    job = repo.create(make_job())
    orchestrator.start(job)
    running = repo.transition(job.id, {S.QUEUED}, S.VALIDATING)
    with pytest.raises(errors.ConflictError, match="VALIDATING"):
        orchestrator.cancel(running)
    arn = repo.get(job.id).artifacts[EXECUTION_ARN]
    assert moto_support.client("stepfunctions").describe_execution(executionArn=arn)["status"] == "RUNNING"


def test_cancel_of_a_job_whose_start_never_happened(
    orchestrator: StepFunctionsOrchestrator, repo: DynamoJobRepository
) -> None:
    job = repo.create(make_job())
    repo.transition(job.id, {S.QUEUED}, S.VALIDATING)
    cancelling = repo.transition(job.id, RUNNING, S.CANCELLING)
    orchestrator.cancel(cancelling)
    assert repo.get(job.id).state is S.CANCELLED


# ==============================================================================================================
# SNS


@pytest.fixture
def queues(aws: None) -> dict[str, str]:
    """An SNS topic with two SQS subscribers: one takes everything, one only FAILED jobs (a filter policy)."""
    sns, sqs = moto_support.client("sns"), moto_support.client("sqs")
    topic = sns.create_topic(Name="af2-jobs")["TopicArn"]
    urls = {"topic": topic}
    for name, policy in (("all", None), ("failed", {"state": ["FAILED"]})):
        url = sqs.create_queue(QueueName=f"af2-{name}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"FilterPolicy": json.dumps(policy)} if policy else {}
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        urls[name] = url
    return urls


def compose(job: Job, event: JobEvent, store: S3ArtifactStore) -> Notification:
    """The message SnsNotifier publishes for the event."""
    return build(job, event, store, link_seconds=LINK_SECONDS)


def received(url: str) -> list[dict[str, Any]]:
    messages = moto_support.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def finished_job(state: JobState, **fields: Any) -> Job:
    phases = {
        "QUEUED": Phase(started_at="2024-05-01T10:00:00.000000+00:00", ended_at="2024-05-01T10:00:02.000000+00:00"),
        "VALIDATING": Phase(started_at="2024-05-01T10:00:02.000000+00:00", ended_at="2024-05-01T10:00:05.000000+00:00"),
        "MSA": Phase(started_at="2024-05-01T10:00:05.000000+00:00", ended_at="2024-05-01T10:03:17.000000+00:00"),
    }
    last = "2024-05-01T10:03:17.000000+00:00"
    if state is S.SUCCEEDED:
        phases["PREDICTING"] = Phase(started_at=last, ended_at="2024-05-01T10:13:20.000000+00:00")
        last = "2024-05-01T10:13:20.000000+00:00"
    phases[state.value] = Phase(started_at=last, ended_at=last)
    return make_job(state=state, phases=phases, created_at=phases["QUEUED"].started_at, **fields)


# One record of predictions.json as the workers write it.
RECORD = {"name": "ubiquitin", "dir": "ubiquitin", "best_model": "model_3_ptm", "mean_plddt": 85.314, "ptm": 0.8123,
          "untrained": True}


def put_results(store: S3ArtifactStore, job: Job) -> None:
    out = f"jobs/{job.id}/output/ubiquitin"
    store.put_bytes(f"jobs/{job.id}/output/predictions.json", json.dumps({"records": [RECORD]}).encode())
    store.put_bytes(f"{out}/versions.json", json.dumps({"params_status": "UNTRAINED"}).encode())
    store.put_bytes(f"{out}/ranked_0.pdb", b"REMARK best\nATOM 1\n")
    store.put_bytes(f"{out}/ranked_1.pdb", b"ATOM 2\n")


def test_success_message_reaches_a_queue_with_scores_links_and_untrained(
    store: S3ArtifactStore, queues: dict[str, str]
) -> None:
    job = finished_job(S.SUCCEEDED)
    put_results(store, job)
    SnsNotifier(queues["topic"], store, client=moto_support.client("sns")).notify(job, JobEvent.SUCCEEDED)

    [envelope] = received(queues["all"])
    assert envelope["Subject"] == "af2jobs ubiquitin SUCCEEDED"
    assert {k: v["Value"] for k, v in envelope["MessageAttributes"].items()} == {
        "state": "SUCCEEDED", "owner": "ann", "event": "succeeded"
    }
    body = json.loads(envelope["Message"])  # the JSON variant, meant for programs
    assert body["job_id"] == job.id and body["state"] == "SUCCEEDED" and body["untrained"] is True
    assert body["records"] == [RECORD] and body["job_name"] == "ubiquitin"
    assert body["phase_seconds"] == {"QUEUED": 2.0, "VALIDATING": 3.0, "MSA": 192.0, "PREDICTING": 603.0}
    assert body["download"] == f"af2 download {job.id} DIR"
    links = {link["key"].rsplit("/", 1)[-1]: link["url"] for link in body["links"]}
    assert set(links) == {"ranked_0.pdb", "predictions.json"}  # ranked_1 is not worth a link
    assert requests.get(links["ranked_0.pdb"], timeout=10).content == b"REMARK best\nATOM 1\n"
    assert body["links_expire_at"] is not None
    assert received(queues["failed"]) == []  # the filter policy kept it out


def test_success_text_says_what_a_person_needs(store: S3ArtifactStore) -> None:
    job = finished_job(S.SUCCEEDED)
    put_results(store, job)
    text = compose(job, JobEvent.SUCCEEDED, store).text
    assert text.startswith(f"Job ubiquitin ({job.id}) is SUCCEEDED")
    assert "Phases: QUEUED 2s, VALIDATING 3s, MSA 3m 12s, PREDICTING 10m 03s" in text
    assert "best model model_3_ptm, mean pLDDT 85.31, pTM 0.812" in text
    assert "\nUNTRAINED: " in text
    assert "Download links (valid until " in text and "X-Amz-Expires=86400" in text
    assert f"af2 download {job.id} DIR" in text


def test_success_text_has_the_cost_and_the_report_link(store: S3ArtifactStore) -> None:
    from af2jobs.cost import job_cost

    job = finished_job(S.SUCCEEDED)
    put_results(store, job)
    store.put_bytes(f"jobs/{job.id}/output/ubiquitin/report.html", b"<!DOCTYPE html>")
    job.cost = {"predict_s": 603.0, "usd": job_cost({"msa_s": 192.0, "predict_s": 603.0}, queue="mid")}
    text = compose(job, JobEvent.SUCCEEDED, store).text
    usd = job.cost["usd"]
    assert f"Cost: ${usd['total_usd']:.4f} (CPU $" in text and f"list prices of {usd['prices_as_of']}" in text
    assert "ubiquitin/report.html" in text


def test_failure_message_names_the_error_and_stage(store: S3ArtifactStore, queues: dict[str, str]) -> None:
    error = JobError(type="StageError", message="MSA: jackhmmer ran out of memory", stage="MSA")
    job = finished_job(S.FAILED, error=error)
    SnsNotifier(queues["topic"], store, client=moto_support.client("sns")).notify(job, JobEvent.FAILED)

    [envelope] = received(queues["failed"])
    body = json.loads(envelope["Message"])
    assert body["error"] == {"type": "StageError", "message": "MSA: jackhmmer ran out of memory", "stage": "MSA"}
    assert body["links"] == [] and body["records"] == [] and body["untrained"] is False
    text = compose(job, JobEvent.FAILED, store).text
    assert "Error in stage MSA: StageError: MSA: jackhmmer ran out of memory" in text
    assert "UNTRAINED" not in text
    assert len(received(queues["all"])) == 1


def _queue(name: str, topic: str, policy: dict[str, Any]) -> str:
    sns, sqs = moto_support.client("sns"), moto_support.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"FilterPolicy": json.dumps(policy)})
    return url


def test_each_owners_mail_reaches_only_their_subscription_and_the_operator_gets_none(
    store: S3ArtifactStore, queues: dict[str, str]
) -> None:
    """The filter policies SnsOwnerMail and the operator's subscription (template.yaml) set, applied by SNS."""
    from af2jobs.adapters.aws.sns import OPERATOR_FILTER_POLICY, owner_filter_policy

    topic = queues["topic"]
    ann = _queue("ann-mail", topic, owner_filter_policy(["ann"]))
    bob = _queue("bob-mail", topic, owner_filter_policy(["bob", "bob-lab"]))
    operator = _queue("operator-mail", topic, OPERATOR_FILTER_POLICY)
    notifier = SnsNotifier(topic, store, client=moto_support.client("sns"))
    notifier.notify(finished_job(S.FAILED), JobEvent.FAILED)  # ann's (make_job's owner)
    notifier.notify(finished_job(S.FAILED, owner="bob-lab"), JobEvent.FAILED)
    moto_support.client("sns").publish(TopicArn=topic, Message="ALARM: af2jobs-idle-gpu")  # an alarm: no owner

    assert [json.loads(m["Message"])["owner"] for m in received(ann)] == ["ann"]
    assert [json.loads(m["Message"])["owner"] for m in received(bob)] == ["bob-lab"]
    assert [m["Message"] for m in received(operator)] == ["ALARM: af2jobs-idle-gpu"]


def test_with_a_signer_the_links_go_through_the_api_and_outlive_the_signing_session(
    store: S3ArtifactStore, queues: dict[str, str]
) -> None:
    from urllib.parse import urlsplit

    from af2jobs.links import LinkSigner

    signer = LinkSigner(b"k" * 32, "https://abc.execute-api.eu-west-1.amazonaws.com/v1", seconds=7 * 24 * 3600)
    job = finished_job(S.SUCCEEDED)
    put_results(store, job)
    SnsNotifier(queues["topic"], store, client=moto_support.client("sns"), links=signer).notify(
        job, JobEvent.SUCCEEDED)
    [envelope] = received(queues["all"])
    body = json.loads(envelope["Message"])
    url = {link["key"].rsplit("/", 1)[-1]: link["url"] for link in body["links"]}["ranked_0.pdb"]
    parts = urlsplit(url)
    assert url.startswith(f"https://abc.execute-api.eu-west-1.amazonaws.com/v1/jobs/{job.id}/link?")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["path"] == "output/ubiquitin/ranked_0.pdb"
    signer.check(job.id, query["path"], int(query["expires"]), query["sig"])  # the API will take it
    week = int(query["expires"]) - datetime.now(timezone.utc).timestamp()
    assert 7 * 24 * 3600 - 60 < week <= 7 * 24 * 3600  # what the mail promises, not a session's few hours
    expires = datetime.fromtimestamp(int(query["expires"]), timezone.utc)
    assert body["links_expire_at"][:10] == expires.date().isoformat()
    assert all("/link?" in u for u in body["artifacts"].values())


def test_owner_mail_subscribes_an_address_once_for_all_its_owners_and_drops_it_when_none_are_left(
    queues: dict[str, str]
) -> None:
    from af2jobs.adapters.aws.sns import SnsOwnerMail

    sns = moto_support.client("sns")
    mail = SnsOwnerMail(queues["topic"], client=sns)

    def email_subscriptions() -> list[dict[str, Any]]:
        subs = sns.list_subscriptions_by_topic(TopicArn=queues["topic"])["Subscriptions"]
        return [s for s in subs if s["Protocol"] == "email"]

    mail.route("ann@lab.example.org", ["ann"])
    mail.route("ann@lab.example.org", ["ann", "ann-lab"])  # a second owner at the same address
    [sub] = email_subscriptions()
    assert sub["Endpoint"] == "ann@lab.example.org"
    attributes = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
    assert json.loads(attributes["FilterPolicy"]) == {"owner": ["ann", "ann-lab"]}
    assert attributes.get("FilterPolicyScope", "MessageAttributes") == "MessageAttributes"
    mail.route("ann@lab.example.org", [])
    assert email_subscriptions() == []


class _PendingSns:
    """An SNS client whose one e-mail subscription is still pending, as SNS lists it (the calls are recorded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_paginator(self, name: str) -> Any:
        pending = {"Protocol": "email", "Endpoint": "ann@lab.example.org", "SubscriptionArn": "PendingConfirmation"}
        return type("P", (), {"paginate": lambda _self, **kw: [{"Subscriptions": [pending]}]})()

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls.append((name, kwargs))
            return {"SubscriptionArn": "arn:aws:sns:us-east-1:1:t:pending-1"}
        return call


@pytest.mark.parametrize(("owners", "policy"), [(["ann", "ann-lab"], {"owner": ["ann", "ann-lab"]}),
                                                ([], {"owner": ["\u0000"]})])
def test_a_pending_subscription_is_changed_through_its_arn_never_subscribed_again_with_other_attributes(
        owners: list[str], policy: dict[str, Any]) -> None:
    from af2jobs.adapters.aws.sns import SnsOwnerMail

    client = _PendingSns()
    SnsOwnerMail("arn:aws:sns:us-east-1:1:t", client=client).route("ann@lab.example.org", owners)
    (subscribe, args), (change, change_args) = client.calls
    assert subscribe == "subscribe" and "Attributes" not in args and args["ReturnSubscriptionArn"] is True
    assert change == "set_subscription_attributes" and change_args["SubscriptionArn"].endswith("pending-1")
    assert json.loads(change_args["AttributeValue"]) == policy  # none left: it admits nothing (it cannot go)


def test_subject_stays_under_the_sns_limit(store: S3ArtifactStore) -> None:
    long_name = JobRequest.parse({"fasta": "n" * 100, "sequence": "MKTAYIAKQR"})
    job = Job(owner="ann", request=long_name, state=S.CANCELLING)
    subject = compose(job, JobEvent.CANCEL_REQUESTED, store).subject
    assert len(subject) < 100 and subject.startswith("af2jobs nnn") and subject.endswith(" CANCELLING")


def test_an_oversized_message_drops_its_links_but_keeps_the_download_command() -> None:
    links = [{"key": f"jobs/x/{i}/ranked_0.pdb", "url": "https://example.com/" + "q" * 20_000} for i in range(10)]
    text = "Job j (x) is SUCCEEDED.\nDownload links (valid until soon):\n" + "".join(f"  {l['url']}\n" for l in links)
    data = {"job_id": "x", "links": links, "links_expire_at": "soon", "download": "af2 download x DIR"}
    payload = sns_payload(Notification(subject="s", text=text, data=data, attributes={}))
    assert len(payload.encode()) <= MAX_MESSAGE_BYTES
    variants = json.loads(payload)
    assert variants["default"] == "Job j (x) is SUCCEEDED.\nDownload all files: af2 download x DIR\n"
    assert json.loads(variants["sqs"])["links"] == [] and json.loads(variants["lambda"])["download"] == data["download"]


# ==============================================================================================================
# CloudWatch Logs: a running stage's live log


def test_a_running_stage_is_tailed_from_its_batch_jobs_log_stream(aws: None) -> None:
    from af2jobs.adapters.aws import CloudWatchJobLogs
    from af2jobs.layout import log_stream_artifact

    logs = moto_support.client("logs")
    logs.create_log_group(logGroupName="/af2jobs/batch")
    stream = "predict/default/0123456789abcdef"
    logs.create_log_stream(logGroupName="/af2jobs/batch", logStreamName=stream)
    now = int(__import__("time").time() * 1000)
    logs.put_log_events(logGroupName="/af2jobs/batch", logStreamName=stream, logEvents=[
        {"timestamp": now - 30 + i, "message": f"line {i}"} for i in range(30)])
    live = CloudWatchJobLogs("/af2jobs/batch", client=logs)

    running = make_job(state=S.PREDICTING, artifacts={log_stream_artifact("predict"): stream})
    assert live.tail(running, 5) == [f"line {i}" for i in range(25, 30)]
    # Nothing to read: not running, its stage's stream not known yet, or a stream that does not exist.
    assert live.tail(make_job(state=S.SUCCEEDED, artifacts=running.artifacts), 5) is None
    assert live.tail(make_job(state=S.MSA, artifacts=running.artifacts), 5) is None
    gone = make_job(state=S.PREDICTING, artifacts={log_stream_artifact("predict"): "predict/default/none"})
    assert live.tail(gone, 5) is None
