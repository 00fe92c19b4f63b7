"""The AWS side of the API: recorded API Gateway events (tests/data/events/) through the Lambda resolver, the TOKEN
authorizer, the two together, and the thin Lambda handlers in functions/ built by wiring.build under moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from af2jobs import errors
from af2jobs.adapters.aws import DynamoJobRepository
from af2jobs.api.auth import authenticate
from af2jobs.api.authorizer import authorize
from af2jobs.models import JobState
from af2jobs.settings import Settings
from tests.functional import moto_support
from tests.functional.api_support import (
    SEQ,
    AwsParts,
    LambdaClient,
    LambdaContext,
    World,
    aws_world,
    lambda_client,
    load_event,
    moto_parts,
    rest_event,
)

RECORDED_KEY = load_event("rest_get_job.json")["headers"]["Authorization"]


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsParts]:
    with moto_parts() as parts:
        yield parts


@pytest.fixture
def world(aws: AwsParts, tmp_path: Path) -> World:
    return aws_world(aws, tmp_path)


@pytest.fixture
def api(world: World) -> LambdaClient:
    return lambda_client(world)


def submit(world: World, owner_key: str) -> str:
    reply = LambdaClient(lambda_client(world).resolver).call(
        "POST", "/jobs", json_body={"fasta": "j", "sequence": SEQ}, headers={"Authorization": owner_key}
    )
    assert reply.status == 201, reply.text
    return reply.json()["id"]


# ==============================================================================================================
# Recorded events, as API Gateway delivers them behind the TOKEN authorizer


def test_recorded_submit_is_the_authorizers_principals_job(api: LambdaClient, world: World) -> None:
    event = load_event("rest_post_jobs.json")
    # The recorded Authorization header is not a valid key: only the authorizer's context can make this work.
    assert world.keys.verify(RECORDED_KEY) is None
    reply = api.invoke(event)
    assert reply.status == 201, reply.text
    job = reply.json()
    assert job["owner"] == "ann" and job["request"]["strategy"] == "best"
    assert job["request"]["model_names"] == ["model_1", "model_3"]
    assert reply.headers["location"] == f"/prod/jobs/{job['id']}"
    # API Gateway retries deliver the same event: the recorded Idempotency-Key makes it the same job.
    again = api.invoke(load_event("rest_post_jobs.json"))
    assert again.json()["id"] == job["id"]
    assert world.orchestrator.started == [job["id"]]


def test_recorded_admin_listing_sees_every_owner_and_pages(api: LambdaClient, world: World) -> None:
    ids = {submit(world, world.ann), submit(world, world.bob), submit(world, world.ann)}
    reply = api.invoke(load_event("rest_list_jobs.json"))  # admin, state=QUEUED, limit=2
    assert reply.status == 200, reply.text
    page = reply.json()
    assert len(page["jobs"]) == 2 and page["next_token"]
    event = load_event("rest_list_jobs.json")
    event["queryStringParameters"]["next_token"] = page["next_token"]
    event["multiValueQueryStringParameters"]["next_token"] = [page["next_token"]]
    rest = api.invoke(event).json()
    assert {j["id"] for j in page["jobs"] + rest["jobs"]} == ids and rest["next_token"] is None
    assert {j["owner"] for j in page["jobs"] + rest["jobs"]} == {"ann", "bob"}


def test_recorded_get_answers_for_the_authorizers_principal_only(api: LambdaClient, world: World) -> None:
    event = load_event("rest_get_job.json")  # ann, a job id that does not exist
    assert api.invoke(event).status == 404
    anns, bobs = submit(world, world.ann), submit(world, world.bob)
    for job_id, status in ((anns, 200), (bobs, 404)):
        event = load_event("rest_get_job.json")
        event["path"] = f"/jobs/{job_id}"
        event["pathParameters"] = {"job_id": job_id}
        event["requestContext"]["path"] = f"/prod/jobs/{job_id}"
        reply = api.invoke(event)
        assert reply.status == status, reply.text
    assert api.invoke({**event, "path": f"/jobs/{anns}"}).json()["links"]["input.fasta"].startswith("https://")


def test_a_started_jobs_aws_references_are_no_links_and_do_not_break_its_detail(api: LambdaClient,
                                                                                 world: World) -> None:
    # What the orchestrator and the Batch stages record on a job: ARNs and Batch job ids, not store keys.
    job_id = submit(world, world.ann)
    world.repo.update(job_id, artifacts={"aws:execution_arn": "arn:aws:states:us-east-1:1:execution:m:x",
                                         "aws:batch:8d0a": "msa"})
    event = load_event("rest_get_job.json")
    event["path"] = f"/jobs/{job_id}"
    event["pathParameters"] = {"job_id": job_id}
    event["requestContext"]["path"] = f"/prod/jobs/{job_id}"
    reply = api.invoke(event)
    assert reply.status == 200, reply.text
    detail = reply.json()
    assert set(detail["links"]) == {"input.fasta"} and detail["artifacts"]["aws:batch:8d0a"] == "msa"


def test_without_the_authorizers_context_the_lambda_checks_the_key_itself(api: LambdaClient, world: World) -> None:
    event = load_event("rest_get_job.json")
    del event["requestContext"]["authorizer"]
    assert api.invoke(event).status == 401  # the recorded key is not a real one
    event["headers"]["Authorization"] = world.ann
    event["multiValueHeaders"]["Authorization"] = [world.ann]
    assert api.invoke(event).status == 404  # authenticated as ann; the recorded job id does not exist


def test_only_the_lambda_trusts_an_authorizer_context(world: World) -> None:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

    event = APIGatewayProxyEvent(load_event("rest_list_jobs.json"))  # says: root, admin
    assert authenticate(event, world.keys, trust_authorizer=True).admin is True
    with pytest.raises(errors.AuthError):
        authenticate(event, world.keys, trust_authorizer=False)


# ==============================================================================================================
# The TOKEN authorizer


def token_event(token: str) -> dict[str, Any]:
    return {**load_event("authorizer_token.json"), "authorizationToken": token}


@pytest.mark.parametrize("form", ["{}", "Bearer {}"])
def test_authorizer_allows_every_route_of_the_stage_for_a_good_key(world: World, form: str) -> None:
    policy = authorize(token_event(form.format(world.ann)), world.keys)
    assert policy["principalId"] == "ann"
    assert policy["context"] == {"owner": "ann", "admin": False}
    [statement] = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    # The answer is cached per token, so it must cover every route, in the event's partition and region.
    assert statement["Resource"] == ["arn:aws-cn:execute-api:cn-northwest-1:123456789012:a1b2c3d4e5/prod/*/*"]


@pytest.mark.parametrize("token", [RECORDED_KEY, "", "Bearer", "af2_" + "0" * 16 + "_" + "y" * 43])
def test_authorizer_says_exactly_unauthorized_for_a_bad_key(world: World, token: str) -> None:
    with pytest.raises(Exception) as raised:
        authorize(token_event(token), world.keys)
    assert type(raised.value) is Exception and str(raised.value) == "Unauthorized"  # API Gateway's 401 contract


def test_authorizer_refuses_a_revoked_key(world: World) -> None:
    with pytest.raises(Exception, match="^Unauthorized$"):
        authorize(token_event(world.key.revoked), world.keys)


def test_authorizer_then_api_acts_as_the_admin(api: LambdaClient, world: World) -> None:
    submit(world, world.ann)
    submit(world, world.bob)
    policy = authorize(token_event(world.admin), world.keys)
    # API Gateway hands the context on with every value as a string.
    context = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in policy["context"].items()}
    event = rest_event("GET", "/jobs", authorizer={"principalId": policy["principalId"], **context})
    reply = api.invoke(event)
    assert {j["owner"] for j in reply.json()["jobs"]} == {"ann", "bob"}


# ==============================================================================================================
# The Lambda handlers in functions/, as deployed: Settings from the environment, wiring.build, Powertools


@pytest.fixture
def deployed(aws: AwsParts, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS resources as template.yaml would make them, and the environment the functions get."""
    sfn, sns = moto_support.client("stepfunctions"), moto_support.client("sns")
    machine = sfn.create_state_machine(
        name="af2-prediction",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{moto_support.ACCOUNT}:role/af2-states",
    )["stateMachineArn"]
    topic = sns.create_topic(Name="af2-jobs")["TopicArn"]
    table = "jobs-deployed"
    aws.dynamodb.create_table(**DynamoJobRepository.table_definition(table))
    aws.s3.create_bucket(Bucket="af2-deployed")
    env = {
        "AF2_MODE": "aws",
        "AF2_JOBS_TABLE": table,
        "AF2_KEYS_TABLE": "af2-keys",
        "AF2_BUCKET": "af2-deployed",
        "AF2_STATE_MACHINE_ARN": machine,
        "AF2_TOPIC_ARN": topic,
        "POWERTOOLS_SERVICE_NAME": "af2jobs",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    Settings()  # the environment is complete
    return env


def test_deployed_api_and_authorizer_functions_serve_a_submit_end_to_end(
    aws: AwsParts, deployed: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    authorizer, api = moto_support.load_function("authorizer"), moto_support.load_function("api")
    policy = authorizer.handler(token_event(f"Bearer {aws.keys.ann}"), LambdaContext())
    context = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in policy["context"].items()}
    body = json.dumps({"fasta": "deployed", "sequence": SEQ}).encode()
    event = rest_event(
        "POST", "/jobs", body=body, headers={"Content-Type": "application/json", "Authorization": aws.keys.ann},
        authorizer={"principalId": policy["principalId"], **context},
    )
    reply = LambdaClient(api.resolver).invoke(event)  # the module's resolver, as its handler uses it...
    assert reply.status == 201, reply.text
    result = api.handler(rest_event("GET", "/jobs", authorizer=event["requestContext"]["authorizer"]), LambdaContext())
    assert result["statusCode"] == 200  # ...and the decorated handler itself
    [job] = json.loads(result["body"])["jobs"]
    assert job["owner"] == "ann" and job["state"] == JobState.QUEUED.value
    executions = moto_support.client("stepfunctions").list_executions(stateMachineArn=deployed["AF2_STATE_MACHINE_ARN"])
    assert len(executions["executions"]) == 1  # the real orchestrator started the real state machine
    with pytest.raises(Exception, match="^Unauthorized$"):
        authorizer.handler(token_event("af2_" + "1" * 16 + "_" + "z" * 43), LambdaContext())
    secret = aws.keys.ann.split("_", 2)[2]
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err  # Powertools' Logger must not log the event
