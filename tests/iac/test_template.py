"""Offline checks of the infrastructure: template.yaml, the state machine definitions, the built Lambda artifact.

No AWS account is reached. The linters run as the same commands `make check-iac` runs; `sam build` runs when a
python3.12 (the Lambda runtime) is installed, and every built handler is then imported with only the built layer
on its path, as Lambda would."""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
# The names the state machine definition reads (its author and template.yaml agree on exactly these).
SUBSTITUTIONS = {
    "ValidateFunctionArn", "JobStateFunctionArn", "NotifyFunctionArn", "MsaJobQueueArn", "MsaJobDefinitionName",
    "PredictJobDefinitionName", "GpuQueueLowArn", "GpuQueueMidArn", "GpuQueueHighArn", "GpuQueueP4Arn",
    "StackName",
}
TOOL_ENV = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGION}


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _tool(name: str) -> str | None:
    """A console script of this environment first (the venv's sam and cfn-lint), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _run(cmd: list[str], *, timeout: int = 300, env: dict[str, str] | None = None, cwd: Path = ROOT):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **TOOL_ENV, **(env or {})})


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain data, short-form tags (!Ref, !Sub, !GetAtt...) read as their long forms."""
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    assert not matches, [str(m) for m in matches]
    return json.loads(json.dumps(template))


def transformed(template: dict[str, Any]) -> dict[str, Any]:
    """What CloudFormation gets after the SAM transform (local code paths stood in for by S3 locations)."""
    from samtranslator.translator.transform import transform

    template = copy.deepcopy(template)
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://artifacts/{name}"

    class NoManagedPolicyNames:  # policies are named by ARN in template.yaml, so no IAM lookup is needed
        def load(self) -> dict:
            return {}

    old = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = REGION
    try:
        return transform(template, {}, NoManagedPolicyNames())
    finally:
        if old is None:
            del os.environ["AWS_DEFAULT_REGION"]
        else:
            os.environ["AWS_DEFAULT_REGION"] = old


def resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, statement) for every IAM statement: roles' inline policies, managed policies, SAM's Policies."""
    found = []
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in properties.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(properties.get("PolicyDocument", {}))
        elif resource["Type"].startswith("AWS::Serverless::"):
            documents += [p for p in _listify(properties.get("Policies", [])) if isinstance(p, dict) and "Statement" in p]
        for document in documents:
            for statement in _listify(document.get("Statement", [])):
                found.append((name, statement))
    return found


def wildcard_grants(template: dict[str, Any]) -> list[str]:
    """Allow statements granting every action of a service (or of all services) on every resource."""
    offending = []
    for where, statement in policy_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        actions = [a for a in _listify(statement.get("Action", [])) if isinstance(a, str)]
        resources_ = _listify(statement.get("Resource", []))
        if any(a == "*" or a.endswith(":*") for a in actions) and "*" in resources_:
            offending.append(f"{where}: {actions} on {resources_}")
        if "NotAction" in statement or "NotResource" in statement:
            offending.append(f"{where}: NotAction/NotResource in an Allow grants nearly everything")
    return offending


BROAD_MANAGED = re.compile(r"policy/(AdministratorAccess|PowerUserAccess|.*FullAccess)$")


def broad_managed_policies(template: dict[str, Any]) -> list[str]:
    found = []
    for name, role in resources(template, "AWS::IAM::Role").items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            text = arn if isinstance(arn, str) else json.dumps(arn)
            if BROAD_MANAGED.search(text.strip('"}')):
                found.append(f"{name}: {text}")
    return found


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def cfn(template) -> dict[str, Any]:
    return transformed(template)


# ---------------------------------------------------------------------------------------------------------------
# Linters


def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    tool = _tool("cfn-lint")
    if tool is None:
        pytest.fail("cfn-lint is not installed: pip install -e '.[dev]' (make test does)")
    return _run([tool, "--format", "parseable", str(path)])


def test_cfn_lint_finds_no_errors_or_warnings():
    result = _cfn_lint(TEMPLATE)
    # Exit status is a bit mask: 2 errors, 4 warnings, 8 informational.
    assert result.returncode & 6 == 0, result.stdout + result.stderr


def test_cfn_lint_does_report_a_broken_template(tmp_path):
    """The check above can fail: the same command on a template with a misspelt property reports an error."""
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("BillingMode: PAY_PER_REQUEST", "BillingMode: FREE_OF_CHARGE", 1))
    result = _cfn_lint(broken)
    assert result.returncode & 2, result.stdout
    assert "FREE_OF_CHARGE" in result.stdout


def test_sam_validate_lint_passes():
    sam = _tool("sam")
    if sam is None:
        pytest.skip("the sam command is missing (aws-sam-cli is in the dev extra: pip install -e '.[dev]')")
    result = _run([sam, "validate", "--lint", "--region", REGION, "--template-file", str(TEMPLATE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_one_throttled_stage_and_the_authorizer_s_cache_is_what_revocation_promises(template):
    from af2jobs import apikeys

    cfn = transformed(template)
    assert [r["Properties"]["StageName"] for r in resources(cfn, "AWS::ApiGateway::Stage").values()] == ["v1"]
    # A deployment with a StageName makes a second stage ("Stage"), outside v1's MethodSettings.
    assert [d["Properties"].get("StageName") for d in resources(cfn, "AWS::ApiGateway::Deployment").values()] == [None]
    auth = template["Resources"]["Api"]["Properties"]["Auth"]["Authorizers"]["ApiKeyAuthorizer"]
    assert auth["Identity"]["ReauthorizeEvery"] == apikeys.GATEWAY_CACHE_S == 60
    assert "refused within a minute" in (ROOT / "docs" / "operations.md").read_text()
    wait = template["Parameters"]["CapacityWaitSeconds"]
    assert (wait["MinValue"], wait["MaxValue"]) == (600, 86400)  # what Batch takes for a RUNNABLE time limit


def test_make_deploy_installs_the_deployment_s_tools_and_none_of_the_prediction_stack():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deploy = project["optional-dependencies"]["deploy"]
    names = {re.split(r"[<>=\[ ;]", d)[0].lower() for d in project["dependencies"] + deploy}
    assert {"aws-sam-cli", "cfn-lint"} <= names
    assert not names & {"jax", "alphafold-colabfold", "openmm", "dm-haiku", "pyhmmer", "numpy"}
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^deploy: (.*)$", makefile, re.M).group(1).split() == ["$(DEPLOY_STAMP)"]
    assert "$(DEPLOY_VENV)/bin/python -m pip install -q -e '.[deploy]'" in makefile


def test_samconfig_sets_every_parameter_with_the_templates_defaults(template):
    import tomllib

    from samcli.cli.types import CfnParameterOverridesType

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    overrides = CfnParameterOverridesType().convert(config["deploy"]["parameters"]["parameter_overrides"], None, None)
    parameters = template["Parameters"]
    assert set(overrides) == set(parameters)
    for name, value in overrides.items():
        default = parameters[name].get("Default")
        if default is not None:
            assert value == str(default), f"{name}: samconfig.toml says {value!r}, template.yaml {default!r}"
    assert "CAPABILITY_IAM" in config["deploy"]["parameters"]["capabilities"]


# ---------------------------------------------------------------------------------------------------------------
# IAM


def test_no_iam_statement_grants_every_action_on_every_resource(template, cfn):
    # Both what is written and what SAM generates from it (policy templates, tracing, logging).
    assert wildcard_grants(template) == []
    assert wildcard_grants(cfn) == []
    assert broad_managed_policies(cfn) == []


def test_the_wildcard_check_flags_what_it_should():
    role = {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{"PolicyName": "p", "PolicyDocument": {
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]},
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},  # one action: fine
            {"Effect": "Deny", "Action": "*", "Resource": "*"},  # a deny: fine
        ]}}], "ManagedPolicyArns": ["arn:aws:iam::aws:policy/AdministratorAccess"]}}
    function = {"Type": "AWS::Serverless::Function", "Properties": {"Policies": [
        {"Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}]}]}}
    synthetic = {"Resources": {"R": role, "F": function}}
    assert len(wildcard_grants(synthetic)) == 3
    assert broad_managed_policies(synthetic) == ["R: arn:aws:iam::aws:policy/AdministratorAccess"]


# ---------------------------------------------------------------------------------------------------------------
# Tables, settings, API routes: the template and the code describe the same things


def _table_shape(definition: dict[str, Any]) -> dict[str, Any]:
    def keys(schema):
        return [(k["AttributeName"], k["KeyType"]) for k in schema]

    return {
        "BillingMode": definition.get("BillingMode"),
        "AttributeDefinitions": sorted((a["AttributeName"], a["AttributeType"]) for a in definition["AttributeDefinitions"]),
        "KeySchema": keys(definition["KeySchema"]),
        "GlobalSecondaryIndexes": sorted(
            (i["IndexName"], tuple(keys(i["KeySchema"])), i["Projection"]["ProjectionType"])
            for i in definition.get("GlobalSecondaryIndexes", [])
        ),
    }


@pytest.mark.parametrize("logical_id, adapter", [
    ("JobsTable", "af2jobs.adapters.aws.dynamodb:DynamoJobRepository"),
    ("KeysTable", "af2jobs.adapters.aws.apikeys:DynamoApiKeyStore"),
])
def test_tables_match_the_adapters_table_definitions(template, logical_id, adapter):
    import importlib

    module, cls = adapter.split(":")
    expected = getattr(importlib.import_module(module), cls).table_definition("t")
    properties = template["Resources"][logical_id]["Properties"]
    assert _table_shape(properties) == _table_shape(expected)
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}


def test_the_jobs_table_has_the_owner_index_the_api_lists_by(template):
    from af2jobs.adapters.aws.dynamodb import OWNER_INDEX

    indexes = {i["IndexName"] for i in template["Resources"]["JobsTable"]["Properties"]["GlobalSecondaryIndexes"]}
    assert OWNER_INDEX == "owner-created-index" and OWNER_INDEX in indexes


def test_functions_and_batch_jobs_get_every_setting_aws_mode_requires(template):
    from af2jobs.settings import _AWS_REQUIRED

    required = {f"AF2_{name.upper()}" for name in _AWS_REQUIRED} | {"AF2_MODE"}
    function_env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert required <= set(function_env)
    assert function_env["AF2_MODE"] == "aws"
    for name in ("MsaJobDefinition", "PredictJobDefinition"):
        env = {e["Name"]: e["Value"] for e in template["Resources"][name]["Properties"]["ContainerProperties"]["Environment"]}
        assert required <= set(env), name
        assert env["AF2_MODE"] == "aws"


def test_the_state_machine_arn_given_to_code_is_the_state_machines_own(template):
    name = template["Resources"]["StateMachine"]["Properties"]["Name"]["Fn::Sub"]
    function_arn = template["Globals"]["Function"]["Environment"]["Variables"]["AF2_STATE_MACHINE_ARN"]["Fn::Sub"]
    assert function_arn.endswith(f":stateMachine:{name}")
    for job in ("MsaJobDefinition", "PredictJobDefinition"):
        env = {e["Name"]: e["Value"] for e in template["Resources"][job]["Properties"]["ContainerProperties"]["Environment"]}
        assert env["AF2_STATE_MACHINE_ARN"]["Fn::Sub"] == function_arn


def _schemes() -> dict:
    from aws_lambda_powertools.event_handler.openapi.models import APIKey

    return {"apiKey": APIKey.model_validate({"type": "apiKey", "in": "header", "name": "Authorization"})}


_SCHEMES = _schemes()


def _router_routes() -> set[tuple[str, str]]:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    from af2jobs.api.app import OPENAPI_PATH, SWAGGER_PATH
    from af2jobs.api.routes import router

    app = APIGatewayRestResolver(enable_validation=True)
    app.include_router(router)
    paths = app.get_openapi_schema(security_schemes=_SCHEMES).paths or {}
    routes = {(path, method.upper()) for path, item in paths.items()
              for method in ("get", "post", "put", "delete", "patch") if getattr(item, method, None) is not None}
    return routes | {(OPENAPI_PATH, "GET"), (SWAGGER_PATH, "GET")} | _original_routes()


def _original_routes() -> set[tuple[str, str]]:
    """The original platform's paths (api/original.py), each under ANY: only ANY carries its CANCEL method."""
    from af2jobs.api.original import CANCEL, router

    rules = {key[0] for key in router._routes}
    assert {(key[0], CANCEL) for key in router._routes if CANCEL in key[1]} == {(r, CANCEL) for r in rules}
    return {(rule.replace("<", "{").replace(">", "}"), "ANY") for rule in rules}


def test_every_api_route_of_the_code_is_a_route_of_the_rest_api_and_back(template):
    events = template["Resources"]["ApiFunction"]["Properties"]["Events"]
    in_template = {(e["Properties"]["Path"], e["Properties"]["Method"].upper()) for e in events.values()
                   if e["Type"] == "Api"}
    assert in_template == _router_routes()


def test_only_the_api_description_and_the_signed_links_are_public(template):
    api = template["Resources"]["Api"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "ApiKeyAuthorizer"
    authorizer = api["Auth"]["Authorizers"]["ApiKeyAuthorizer"]
    assert authorizer["FunctionPayloadType"] == "TOKEN"
    assert authorizer["Identity"]["Header"] == "Authorization"
    assert authorizer["FunctionArn"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    public = {e["Properties"]["Path"] for e in template["Resources"]["ApiFunction"]["Properties"]["Events"].values()
              if e["Properties"].get("Auth", {}).get("Authorizer") == "NONE"}
    assert public == {"/openapi.json", "/swagger", "/jobs/{job_id}/link"}
    # and the code agrees: the link route is the one operation whose document asks for no key
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    from af2jobs.api.routes import router

    app = APIGatewayRestResolver(enable_validation=True)
    app.include_router(router)
    paths = app.get_openapi_schema(security_schemes=_SCHEMES).paths or {}
    keyless = {path for path, item in paths.items() for op in (item.get, item.post, item.put, item.delete)
               if op is not None and op.security == [{}]}
    assert keyless == {"/jobs/{job_id}/link"}


def test_the_mail_links_are_signed_with_the_stacks_secret_and_the_operator_gets_no_owners_mail(template):
    from af2jobs.adapters.aws.sns import OPERATOR_FILTER_POLICY

    resources = template["Resources"]
    secret = resources["LinkSecret"]["Properties"]
    assert secret["KmsKeyId"] == {"Ref": "TopicKey"} and secret["GenerateSecretString"]["PasswordLength"] >= 32
    for name in ("ApiFunction", "NotifyFunction", "ReconcileFunction"):
        props = resources[name]["Properties"]
        assert props["Environment"]["Variables"]["AF2_LINK_SECRET_ARN"] == {"Ref": "LinkSecret"}
        grants = [st for pol in props["Policies"] if "Statement" in pol for st in pol["Statement"]]
        assert {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "LinkSecret"}} \
            in grants
    # the notifier signs links to the API itself (the API only checks them: knowing its own URL would be a cycle)
    for name in ("NotifyFunction", "ReconcileFunction"):  # the two that mail results
        api_url = resources[name]["Properties"]["Environment"]["Variables"]["AF2_API_URL"]
        assert api_url == template["Outputs"]["ApiUrl"]["Value"]
    assert "AF2_API_URL" not in resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    subscription = resources["EmailSubscription"]["Properties"]
    assert subscription["FilterPolicyScope"] == "MessageAttributes"
    assert subscription["FilterPolicy"] == OPERATOR_FILTER_POLICY  # alarms and database loads only


# ---------------------------------------------------------------------------------------------------------------
# Batch


def _job(template, name):
    return template["Resources"][name]["Properties"]


@pytest.mark.parametrize("name, stage", [("MsaJobDefinition", "msa"), ("PredictJobDefinition", "predict")])
def test_stage_jobs_run_the_batch_entrypoint_with_retries_timeouts_and_logs(template, name, stage):
    job = _job(template, name)
    container = job["ContainerProperties"]
    assert container["Command"] == ["python", "-m", "af2jobs.awsrun.batch", stage, "--job-id", "Ref::job_id"]
    requirements = {r["Type"] for r in container["ResourceRequirements"]}
    assert requirements == ({"VCPU", "MEMORY", "GPU"} if stage == "predict" else {"VCPU", "MEMORY"})
    rules = job["RetryStrategy"]["EvaluateOnExit"]
    assert rules[0] == {"OnStatusReason": "Host EC2*", "Action": "RETRY"}  # Spot reclaim: run again
    assert rules[-1] == {"OnReason": "*", "Action": "EXIT"}  # anything else: the state machine decides
    assert job["RetryStrategy"]["Attempts"] >= 2
    assert "AttemptDurationSeconds" in job["Timeout"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert {"SourceVolume": "fsx", "ContainerPath": "/fsx", "ReadOnly": False} in container["MountPoints"]


def test_the_batch_entrypoint_module_exists():
    entry = ROOT / "src" / "af2jobs" / "awsrun" / "batch.py"
    assert 'if __name__ == "__main__":' in entry.read_text(), "python -m af2jobs.awsrun.batch needs it"


def test_the_database_load_job_runs_the_loader_with_arguments_it_accepts(template):
    from af2jobs import dbload

    job = _job(template, "DbLoadJobDefinition")
    command = job["ContainerProperties"]["Command"]
    assert command[:3] == ["python", "-m", "af2jobs.dbload"]
    # Batch puts the job definition's Parameters (defaults, or the submission's) where Ref::name stands.
    args = [job["Parameters"][a.removeprefix("Ref::")] if a.startswith("Ref::") else a for a in command[3:]]
    parsed = dbload.parser().parse_args(args)
    assert dbload.resolve(parsed.databases) == list(dbload.SETS["full"])
    env = {e["Name"] for e in job["ContainerProperties"]["Environment"]}
    assert "AF2_TOPIC_ARN" in env


def test_the_database_load_runs_on_demand_with_an_msa_job_s_size(template):
    queue = _job(template, "DbLoadQueue")
    environments = [template["Resources"][o["ComputeEnvironment"]["Ref"]] for o in queue["ComputeEnvironmentOrder"]]
    assert [e["Properties"]["ComputeResources"]["Type"] for e in environments] == ["EC2"]  # no Spot reclaim
    assert queue["SchedulingPolicyArn"] == {"Ref": "FairShare"}  # the runbook's --share-identifier is needed
    assert template["Outputs"]["DbLoadJobQueueArn"]["Value"] == {"Ref": "DbLoadQueue"}
    sizes = {r["Type"]: r["Value"] for r in _job(template, "DbLoadJobDefinition")["ContainerProperties"][
        "ResourceRequirements"]}
    assert sizes == {"VCPU": {"Ref": "MsaVcpus"}, "MEMORY": {"Ref": "MsaMemoryMiB"}}
    assert 'out DbLoadJobQueueArn' in (ROOT / "docs" / "operations.md").read_text()


def test_msa_queue_prefers_spot_and_falls_back_to_on_demand(template):
    order = sorted(_job(template, "MsaQueue")["ComputeEnvironmentOrder"], key=lambda o: o["Order"])
    kinds = [template["Resources"][o["ComputeEnvironment"]["Ref"]]["Properties"]["ComputeResources"]["Type"]
             for o in order]
    assert kinds == ["SPOT", "EC2"]


@pytest.mark.parametrize("queue, parameter", [
    ("GpuLowQueue", "GpuLowInstanceTypes"), ("GpuMidQueue", "GpuMidInstanceTypes"),
    ("GpuHighQueue", "GpuHighInstanceTypes"), ("GpuP4Queue", "GpuP4InstanceTypes"),
])
def test_each_gpu_queue_runs_on_its_instance_families_with_the_nvidia_image(template, queue, parameter):
    (entry,) = _job(template, queue)["ComputeEnvironmentOrder"]
    resources_ = template["Resources"][entry["ComputeEnvironment"]["Ref"]]["Properties"]["ComputeResources"]
    assert resources_["InstanceTypes"] == {"Ref": parameter}
    assert resources_["Ec2Configuration"] == [{"ImageType": "ECS_AL2023_NVIDIA"}]
    assert resources_["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "LaunchTemplate"}


def test_every_instance_mounts_the_file_system_the_jobs_read(template):
    user_data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    script = user_data["Fn::Base64"]["Fn::Sub"]
    assert "mount -t lustre" in script and "${FileSystem.DNSName}" in script and "${FileSystem.LustreMountName}" in script
    for environment in ("MsaSpotEnvironment", "MsaOnDemandEnvironment", "GpuLowEnvironment", "GpuMidEnvironment",
                        "GpuHighEnvironment", "GpuP4Environment"):
        compute = template["Resources"][environment]["Properties"]["ComputeResources"]
        assert compute["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "LaunchTemplate"}, environment
        assert compute["SecurityGroupIds"] == [{"Ref": "ComputeSecurityGroup"}]


def test_batch_state_changes_of_this_stacks_queues_reach_the_events_function(template):
    (event,) = template["Resources"]["BatchEventsFunction"]["Properties"]["Events"].values()
    pattern = event["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.batch"] and pattern["detail-type"] == ["Batch Job State Change"]
    queues = {q["Ref"] for q in pattern["detail"]["jobQueue"]}
    # The database load's queue runs no job of the platform: nothing there for the function to record.
    assert queues == {name for name in resources(template, "AWS::Batch::JobQueue")} - {"DbLoadQueue"}


# ---------------------------------------------------------------------------------------------------------------
# The state machine and its definition files


def test_definition_substitutions_are_exactly_the_agreed_names_and_each_is_defined(template):
    properties = template["Resources"]["StateMachine"]["Properties"]
    substitutions = properties["DefinitionSubstitutions"]
    assert set(substitutions) == SUBSTITUTIONS
    for name, value in substitutions.items():
        if name.endswith("JobDefinitionName"):
            continue  # a name, below
        if value == {"Ref": "AWS::StackName"}:
            continue  # a pseudo parameter
        target = value.get("Ref") or value.get("Fn::GetAtt", [None])[0]
        assert target in template["Resources"], f"{name} refers to {value}, which the template does not define"
    # Job definitions by name (the latest active revision), never a revision's ARN: a deploy that registers a new
    # revision deregisters the old one, and an execution in flight would then fail at its next SubmitJob.
    for name, resource in (("MsaJobDefinitionName", "MsaJobDefinition"),
                           ("PredictJobDefinitionName", "PredictJobDefinition")):
        assert substitutions[name] == template["Resources"][resource]["Properties"]["JobDefinitionName"], name
        assert resource in template["Resources"]["StateMachine"]["DependsOn"]
    assert properties["Tracing"] == {"Enabled": True}
    assert properties["Logging"]["Destinations"]


def test_the_state_machine_definition_file_exists(template):
    uri = template["Resources"]["StateMachine"]["Properties"]["DefinitionUri"]
    assert (ROOT / uri).is_file(), f"template.yaml names {uri}"


DEFINITIONS = sorted(glob.glob(str(ROOT / "statemachine" / "*.asl.json")))
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def _states(definition: dict[str, Any]):
    """Every state, nested ones (Parallel branches, Map processors) included."""
    for name, state in definition.get("States", {}).items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _states(state[key])


def _read_definition(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: Path(p).name)
def test_asl_validator_accepts_the_definition(path):
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("npx is missing: install Node.js (npm), then `npm ci` (make test runs it)")
    if not (ROOT / "node_modules" / ".bin" / "asl-validator").exists():
        pytest.fail("asl-validator is not installed: run `npm ci` at the repository root (make test runs it)")
    result = _run([npx, "--no-install", "asl-validator", "--json-path", path])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: Path(p).name)
def test_the_definition_uses_only_substitutions_the_template_defines(path):
    used = set(PLACEHOLDER.findall(Path(path).read_text()))
    assert used <= SUBSTITUTIONS, f"not in DefinitionSubstitutions: {sorted(used - SUBSTITUTIONS)}"


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: Path(p).name)
def test_the_definition_is_jsonpath_with_a_timeout_on_every_task(path):
    definition = _read_definition(path)
    assert definition.get("QueryLanguage", "JSONPath") == "JSONPath"
    for name, state in _states(definition):
        assert state.get("QueryLanguage", "JSONPath") == "JSONPath", name
        if state["Type"] == "Task":
            assert "TimeoutSeconds" in state or "TimeoutSecondsPath" in state, f"task {name} has no timeout"


# What each service integration needs the state machine's role to allow.
INTEGRATION_ACTIONS = {
    "lambda:invoke": {"lambda:invokefunction"},
    "batch:submitJob": {"batch:submitjob"},
    "batch:submitJob.sync": {"batch:submitjob", "batch:describejobs", "batch:terminatejob", "events:putrule",
                             "events:puttargets", "events:describerule"},
    "sns:publish": {"sns:publish"},
    "dynamodb:getItem": {"dynamodb:getitem"},
    "dynamodb:updateItem": {"dynamodb:updateitem"},
    "dynamodb:putItem": {"dynamodb:putitem"},
    "dynamodb:deleteItem": {"dynamodb:deleteitem"},
}


def _needed_actions(resource: str) -> set[str] | None:
    if re.fullmatch(r"\$\{\w+FunctionArn\}", resource):
        return {"lambda:invokefunction"}
    match = re.fullmatch(r"arn:[^:]+:states:::(.+?)(\.waitForTaskToken)?", resource)
    return INTEGRATION_ACTIONS.get(match.group(1)) if match else None


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: Path(p).name)
def test_the_state_machine_role_allows_every_integration_the_definition_calls(path, cfn):
    role = cfn["Resources"]["StateMachineRole"]["Properties"]
    allowed = {a.lower() for p in role.get("Policies", []) for s in _listify(p["PolicyDocument"]["Statement"])
               if s["Effect"] == "Allow" for a in _listify(s["Action"])}
    for name, state in _states(_read_definition(path)):
        if state["Type"] != "Task":
            continue
        needed = _needed_actions(state["Resource"])
        assert needed is not None, f"{name}: no permissions known for {state['Resource']}; add them here and to the role"
        assert needed <= allowed, f"{name} calls {state['Resource']}; the role lacks {sorted(needed - allowed)}"


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: Path(p).name)
def test_every_batch_submission_passes_the_job_id_the_command_expects(path):
    for name, state in _states(_read_definition(path)):
        if state["Type"] == "Task" and ":states:::batch:submitJob" in state["Resource"]:
            parameters = state.get("Parameters", {})
            passed = parameters.get("Parameters", {})
            assert "job_id" in passed or "job_id.$" in passed, f"{name}: the job definition's Ref::job_id stays unset"
            assert parameters.get("JobDefinition") in ("${MsaJobDefinitionName}", "${PredictJobDefinitionName}"), name


# ---------------------------------------------------------------------------------------------------------------
# sam build, then every built handler imported the way Lambda would (only its folder and the layer on the path)


def _python312() -> str | None:
    candidates = [shutil.which("python3.12")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")), reverse=True)
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12"), reverse=True)
    for candidate in filter(None, candidates):
        # pyenv shims exist for versions that are installed but not selected; only one that runs will do.
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                               capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


FUNCTIONS = sorted(resources(load_template(), "AWS::Serverless::Function"))
LAMBDA_ENV = {
    "AF2_MODE": "aws",
    "AF2_REGION": REGION,
    "AF2_JOBS_TABLE": "jobs",
    "AF2_KEYS_TABLE": "keys",
    "AF2_BUCKET": "bucket",
    "AF2_STATE_MACHINE_ARN": f"arn:aws:states:{REGION}:123456789012:stateMachine:af2jobs-prediction",
    "AF2_TOPIC_ARN": f"arn:aws:sns:{REGION}:123456789012:af2jobs",
    "AF2_BATCH_LOG_GROUP": "/af2jobs/af2jobs/batch",
    "POWERTOOLS_SERVICE_NAME": "af2jobs",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, template) -> Path:
    python312 = _python312()
    if python312 is None:
        pytest.skip("no python3.12 (the Lambda runtime) on this machine, so sam build cannot run")
    sam = _tool("sam")
    if sam is None:
        pytest.skip("the sam command is missing (aws-sam-cli is in the dev extra: pip install -e '.[dev]')")
    missing = [f"{name}: {r['Properties']['CodeUri']}app.py" for name, r in
               resources(template, "AWS::Serverless::Function").items()
               if not (ROOT / r["Properties"]["CodeUri"] / "app.py").is_file()]
    assert not missing, f"handlers named in template.yaml do not exist: {missing}"
    work = tmp_path_factory.mktemp("sam")
    path = os.pathsep.join([str(Path(python312).parent), str(Path(sys.executable).parent), os.environ["PATH"]])
    result = _run([sam, "build", "--template-file", str(TEMPLATE), "--build-dir", str(work / "build")],
                  cwd=work, timeout=600, env={"PATH": path})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work / "build"


def test_the_built_layer_is_the_base_package_for_the_lambda_runtime(built):
    layer = built / "CoreLayer" / "python"
    assert (layer / "af2jobs" / "settings.py").read_bytes() == (ROOT / "src/af2jobs/settings.py").read_bytes()
    for heavy in ("jax", "jaxlib", "alphafold", "haiku", "pyhmmer"):
        assert not (layer / heavy).exists(), f"the pipeline's {heavy} is in the layer"
    assert list(layer.glob("pydantic_core/*cpython-312-x86_64-linux-gnu.so")), "pydantic-core not built for 3.12"
    size = sum(p.stat().st_size for p in layer.rglob("*") if p.is_file())
    assert size < 200 * 2**20, f"layer is {size / 2**20:.0f} MiB; Lambda allows 250 MiB unzipped in all"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_built_handler_imports_with_only_the_layer(built, function):
    python312 = _python312()
    code = (
        "import sys; sys.path[:0] = sys.argv[1:3]\n"
        "import app, af2jobs\n"
        "assert callable(app.handler), 'app.handler is not a function'\n"
        "assert af2jobs.__file__.startswith(sys.argv[2]), af2jobs.__file__\n"
    )
    # -I -S: no site-packages, no user site, no PYTHONPATH; Lambda gives /var/task and /opt/python only.
    result = subprocess.run(
        [python312, "-I", "-S", "-c", code, str(built / function), str(built / "CoreLayer" / "python")],
        capture_output=True, text=True, timeout=120, cwd=built, env={"PATH": "/usr/bin:/bin", **LAMBDA_ENV},
    )
    assert result.returncode == 0, result.stderr[-4000:]


# -- watching it --------------------------------------------------------------------------------------------------

def test_the_dashboard_is_the_one_monitoring_generates(template):
    from monitoring.dashboard import body

    props = template["Resources"]["Dashboard"]["Properties"]
    text = props["DashboardBody"]["Fn::Sub"]
    # The two substitutions are the only placeholders; with them filled in it is the generator's dashboard.
    assert set(re.findall(r"\$\{([^}]+)\}", text)) == {"AWS::Region", "StateMachine"}
    filled = text.replace("${AWS::Region}", "eu-west-1").replace("${StateMachine}", "arn:aws:states:sm")
    assert json.loads(filled) == body("eu-west-1", "arn:aws:states:sm")


def test_the_idle_gpu_alarm_is_the_one_monitoring_defines_and_notifies_the_topic(template):
    from monitoring.dashboard import idle_gpu_alarm

    props = template["Resources"]["IdleGpuAlarm"]["Properties"]
    expected = idle_gpu_alarm()
    for key in ("ComparisonOperator", "Threshold", "EvaluationPeriods", "DatapointsToAlarm", "TreatMissingData",
                "AlarmDescription"):
        assert props[key] == expected[key], key
    assert props["Metrics"] == expected["Metrics"]
    assert props["AlarmActions"] == [{"Ref": "Topic"}]


def test_the_results_bucket_expires_the_msa_cache_where_the_batch_jobs_write_it(template):
    from af2jobs.layout import MSA_CACHE_PREFIX as CACHE_PREFIX

    rules = template["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    [rule] = [r for r in rules if r["Id"] == "expire-msa-cache"]
    assert rule["Prefix"] == f"{CACHE_PREFIX}/" and rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "MsaCacheDays"}
    assert template["Parameters"]["MsaCacheDays"]["MinValue"] >= 1


def test_predict_jobs_take_unified_memory_from_the_stack_parameter(template):
    env = template["Resources"]["PredictJobDefinition"]["Properties"]["ContainerProperties"]["Environment"]
    assert {"Name": "AF2_UNIFIED_MEMORY", "Value": {"Ref": "UnifiedMemory"}} in env
    parameter = template["Parameters"]["UnifiedMemory"]
    assert parameter["Default"] == "false" and set(parameter["AllowedValues"]) == {"true", "false"}


def test_the_topic_key_lets_alarms_rules_and_every_publisher_use_it(template):
    """A customer-managed key: alias/aws/sns admits no service principal, so the idle-GPU alarm could not deliver."""
    topic = template["Resources"]["Topic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "TopicKey"}
    key = template["Resources"]["TopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    services = [st for st in key["KeyPolicy"]["Statement"] if "Service" in st["Principal"]]
    assert {p for st in services for p in st["Principal"]["Service"]} >= {"cloudwatch.amazonaws.com",
                                                                          "events.amazonaws.com"}
    assert all({"kms:Decrypt", "kms:GenerateDataKey*"} <= set(st["Action"]) for st in services)
    publishers = [where for where, st in policy_statements(template)
                  if "sns:Publish" in _listify(st.get("Action", [])) and st.get("Resource") == {"Ref": "Topic"}]
    using_key = {where for where, st in policy_statements(template)
                 if "kms:GenerateDataKey*" in _listify(st.get("Action", []))
                 and st.get("Resource") == {"Fn::GetAtt": ["TopicKey", "Arn"]}}
    assert publishers and all(where in using_key for where in publishers), (publishers, using_key)


def test_the_file_system_waits_for_its_lustre_ingress_rules(template):
    rules = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::EC2::SecurityGroupIngress"
             and r["Properties"]["GroupId"] == {"Ref": "FileSystemSecurityGroup"}]
    assert len(rules) >= 2
    assert set(rules) <= set(template["Resources"]["FileSystem"]["DependsOn"])


def test_executions_that_end_badly_reach_the_reconciler(template):
    function = template["Resources"]["ReconcileFunction"]["Properties"]
    pattern = function["Events"]["ExecutionEnded"]["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.states"] and pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert set(pattern["detail"]["status"]) == {"FAILED", "TIMED_OUT", "ABORTED"}
    (machine,) = pattern["detail"]["stateMachineArn"]
    name = template["Resources"]["StateMachine"]["Properties"]["Name"]["Fn::Sub"]
    assert machine["Fn::Sub"].endswith(f":stateMachine:{name}")
    assert "DeadLetterQueue" in function  # EventBridge invokes it asynchronously
    from af2jobs.awsrun import reconcile

    assert set(reconcile.ENDED) == set(pattern["detail"]["status"])


@pytest.mark.parametrize("queue", ["GpuLowQueue", "GpuMidQueue", "GpuHighQueue", "GpuP4Queue"])
def test_a_gpu_job_waiting_for_capacity_is_cancelled_after_the_stacks_wait(template, queue):
    """Without it the job at the head of a GPU queue with no capacity or quota waits RUNNABLE up to the task's 48 h
    timeout, and every job behind it with it."""
    from af2jobs.awsrun.failures import NO_CAPACITY

    actions = template["Resources"][queue]["Properties"]["JobStateTimeLimitActions"]
    capacity = [a for a in actions if a["Reason"] == NO_CAPACITY]
    assert capacity == [{"State": "RUNNABLE", "Action": "CANCEL", "MaxTimeSeconds": {"Ref": "CapacityWaitSeconds"},
                         "Reason": NO_CAPACITY}]
    assert template["Parameters"]["CapacityWaitSeconds"]["MinValue"] >= 600


def test_compute_environments_let_running_jobs_finish_an_update_and_broken_instances_leave(template):
    environments = [r for r in template["Resources"].values() if r["Type"] == "AWS::Batch::ComputeEnvironment"]
    assert len(environments) == 6
    for environment in environments:
        assert environment["Properties"]["UpdatePolicy"] == {"TerminateJobsOnUpdate": False,
                                                             "JobExecutionTimeoutMinutes": 360}
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    script = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert "mountpoint -q /fsx || leave" in script and "shutdown -h now" in script  # tests/iac/test_userdata.py


def test_private_subnets_without_nat_get_every_endpoint_batch_on_ecs_needs(template):
    endpoints = {".".join(r["Properties"]["ServiceName"]["Fn::Sub"].split(".")[3:]): r  # com.amazonaws.REGION.x
                 for r in template["Resources"].values() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    needed = {"ecs", "ecs-agent", "ecs-telemetry", "ecr.api", "ecr.dkr", "logs", "monitoring", "sts"}
    assert needed | {"s3", "dynamodb"} <= set(endpoints)
    one_per_zone = {"Fn::If": ["HasEndpointSubnets", {"Ref": "EndpointSubnetIds"},
                               [{"Fn::Select": [0, {"Ref": "SubnetIds"}]}]]}
    for name, endpoint in endpoints.items():
        kind = endpoint["Properties"]["VpcEndpointType"]
        assert kind == ("Gateway" if name in ("s3", "dynamodb") else "Interface"), name
        if kind == "Interface":
            assert endpoint["Condition"] == "WithVpcEndpoints", name
            assert endpoint["Properties"]["PrivateDnsEnabled"] is True
            # Not SubnetIds, which may list two subnets of one zone (the file system's zone, as the runbook says):
            # EC2 refuses such an endpoint (DuplicateSubnetsInSameZone) and the stack rolls back.
            assert endpoint["Properties"]["SubnetIds"] == one_per_zone, name
        else:  # wherever the route tables are given, NAT or not: S3 and DynamoDB traffic off the NAT
            assert endpoint["Condition"] == "WithGatewayEndpoints", name
            assert endpoint["Properties"]["RouteTableIds"] == {"Ref": "RouteTableIds"}
    assert template["Conditions"]["HasRouteTables"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "RouteTableIds"}]}, ""]}]}
    assert template["Conditions"]["HasEndpointSubnets"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "EndpointSubnetIds"}]}, ""]}]}
    assert template["Conditions"]["WithGatewayEndpoints"] == {
        "Fn::And": [{"Condition": "HasRouteTables"}, {"Fn::Equals": [{"Ref": "GatewayEndpoints"}, "true"]}]}
    rule = template["Rules"]["EndpointsNeedRouteTables"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "VpcEndpoints"}, "true"]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Contains": [{"Ref": "RouteTableIds"}, ""]}]}


RULE_FUNCTIONS = {"Fn::And", "Fn::Contains", "Fn::EachMemberEquals", "Fn::EachMemberIn", "Fn::Equals", "Fn::Not",
                  "Fn::Or", "Fn::RefAll", "Fn::ValueOf", "Fn::ValueOfAll", "Ref"}


def test_rules_use_only_the_functions_cloudformation_takes_in_rules(template):
    """CloudFormation refuses any other intrinsic function in a rule (Rules, "Rule-specific intrinsic functions"),
    and cfn-lint does not say so: a Fn::Join there fails every create and update."""
    def functions(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("Fn::") or key in ("Ref", "Condition"):
                    yield key
                yield from functions(value)
        elif isinstance(node, list):
            for item in node:
                yield from functions(item)

    used = set(functions(template["Rules"]))
    assert used and used <= RULE_FUNCTIONS, used - RULE_FUNCTIONS
    ingress = template["Resources"]["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress == [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                        "SourceSecurityGroupId": {"Ref": "ComputeSecurityGroup"},
                        "Description": "HTTPS from the Batch instances"}]
    assert template["Conditions"]["WithVpcEndpoints"] == {"Fn::Equals": [{"Ref": "VpcEndpoints"}, "true"]}


# -- fair share, least privilege, instance metadata ----------------------------------------------------------------

STACK_TAG = "af2jobs:stack"
# The FIFO queues' logical ids before fair share: Batch cannot add a scheduling policy to a FIFO queue, so reusing
# one would make CloudFormation attempt an in-place update that Batch refuses.
FIFO_QUEUE_IDS = {"MsaJobQueue", "GpuQueueLow", "GpuQueueMid", "GpuQueueHigh", "GpuQueueP4"}


def _submit_tasks() -> list[tuple[str, dict[str, Any]]]:
    return [(name, state) for path in DEFINITIONS for name, state in _states(_read_definition(path))
            if state["Type"] == "Task" and ":states:::batch:submitJob" in state["Resource"]]


def test_every_queue_schedules_by_fair_share_under_a_logical_id_that_was_never_fifo(template):
    queues = resources(template, "AWS::Batch::JobQueue")
    assert len(queues) == 6 and not FIFO_QUEUE_IDS & set(template["Resources"])  # MSA, 4 GPU, the database load
    for name, queue in queues.items():
        assert queue["Properties"]["SchedulingPolicyArn"] == {"Ref": "FairShare"}, name
    policy = template["Resources"]["FairShare"]
    assert policy["Type"] == "AWS::Batch::SchedulingPolicy"
    fair = policy["Properties"]["FairsharePolicy"]
    # No owner listed: every owner has the default weight 1 (ShareAttributes); some capacity kept for a newcomer.
    assert "ShareDistribution" not in fair and 0 < fair["ComputeReservation"] <= 50


def test_every_batch_submission_passes_the_owners_share_and_this_stacks_tag(template):
    """A fair-share queue refuses a SubmitJob without a share identifier (SubmitJob, shareIdentifier)."""
    tasks = _submit_tasks()
    assert {name for name, _ in tasks} == {"RunMsa", "RunPrediction", "RunPredictionLarger"}
    for name, state in tasks:
        parameters = state["Parameters"]
        assert parameters["ShareIdentifier.$"] == "$.validation.share_identifier", name
        assert parameters["Tags"] == {STACK_TAG: "${StackName}"}, name
    substitutions = template["Resources"]["StateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert substitutions["StackName"] == {"Ref": "AWS::StackName"}


def _grants(cfn: dict[str, Any], action: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, role in resources(cfn, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in _listify(policy["PolicyDocument"]["Statement"]):
                if statement["Effect"] == "Allow" and action in _listify(statement["Action"]):
                    found.append((name, statement))
    return found


def test_terminate_job_is_granted_only_on_jobs_tagged_as_this_stacks(cfn):
    """Batch job ARNs carry only the job id; TerminateJob supports aws:ResourceTag (Service Authorization
    Reference, AWS Batch), and the state machine tags every job it submits."""
    grants = _grants(cfn, "batch:TerminateJob")
    assert {name for name, _ in grants} == {"ApiFunctionRole", "StateMachineRole"}
    for name, statement in grants:
        assert statement["Condition"] == {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": {"Ref": "AWS::StackName"}}}, name
    # Tagging on submission needs batch:TagResource; only the stack's tag, only with the stack's value.
    ((name, tagging),) = _grants(cfn, "batch:TagResource")
    assert name == "StateMachineRole"
    assert tagging["Condition"]["StringEquals"] == {f"aws:RequestTag/{STACK_TAG}": {"Ref": "AWS::StackName"}}
    assert tagging["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": [STACK_TAG]}


# What the state machine's role needs besides its integrations: execution logging (Logging) and X-Ray (Tracing).
STATE_MACHINE_LOGGING = {"logs:createlogdelivery", "logs:getlogdelivery", "logs:updatelogdelivery",
                         "logs:deletelogdelivery", "logs:listlogdeliveries", "logs:putresourcepolicy",
                         "logs:describeresourcepolicies", "logs:describeloggroups"}


def test_the_state_machine_role_grants_nothing_the_definition_does_not_call(cfn):
    role = cfn["Resources"]["StateMachineRole"]["Properties"]
    allowed = {a.lower() for p in role.get("Policies", []) for s in _listify(p["PolicyDocument"]["Statement"])
               if s["Effect"] == "Allow" for a in _listify(s["Action"])}
    needed = {"batch:tagresource"}  # SubmitJob with Tags
    for path in DEFINITIONS:
        for _, state in _states(_read_definition(path)):
            if state["Type"] == "Task":
                needed |= _needed_actions(state["Resource"]) or set()
    assert allowed - needed - STATE_MACHINE_LOGGING == set()
    assert [arn["Fn::Sub"] if isinstance(arn, dict) else arn for arn in role.get("ManagedPolicyArns", [])] == [
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"]


def test_containers_cannot_reach_instance_metadata_and_gpumon_reads_the_hosts_file(template):
    """Hop limit 1 with IMDSv2 only: a container behind the Docker bridge gets no token, so no instance-role
    credentials. gpumon's instance id and type come from a file the user data writes on the host instead."""
    from monitoring.gpumon import INSTANCE_FILE

    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    script = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert f"> {INSTANCE_FILE}.tmp" in script and f"mv {INSTANCE_FILE}.tmp {INSTANCE_FILE}" in script
    assert "meta-data/$1" in script and "instance-id" in script and "instance-type" in script
    assert script.index(str(INSTANCE_FILE)) < script.index("mount -t lustre")  # before the slow part
    container = template["Resources"]["PredictJobDefinition"]["Properties"]["ContainerProperties"]
    (volume,) = [v for v in container["Volumes"] if v["Host"]["SourcePath"] == str(INSTANCE_FILE.parent)]
    assert {"SourceVolume": volume["Name"], "ContainerPath": str(INSTANCE_FILE.parent), "ReadOnly": True} in \
        container["MountPoints"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["AWS_DEFAULT_REGION"] == {"Ref": "AWS::Region"}  # boto3 cannot ask IMDS for it either
