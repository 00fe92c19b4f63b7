"""docs/operations.md's Batch commands, as written, against moto's Batch with AWS Batch's fair-share rule
(sfn_support.FairShareCheck): a runbook line that Batch would refuse fails here. The AWS CLI's arguments become the
API call the CLI makes (kebab-case options to the operation's members, its shorthand `k=v,k=v` for maps), and
`$(out NAME)` the stack output it reads.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.functional import moto_support
from tests.statemachine.sfn_support import FairShareCheck, _job_queues

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def runbook_commands(program: str) -> list[list[str]]:
    """Each command of the runbook's code blocks that starts with `program` (e.g. "aws batch submit-job"), its
    continuation lines joined and its comments dropped, as the shell splits it."""
    blocks = re.findall(r"```\n(.*?)```", RUNBOOK.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for command in re.sub(r"\\\n", " ", block).splitlines():
            words = shlex.split(command, comments=True)
            if words[:len(program.split())] == program.split():
                commands.append(words)
    return commands


def api_call(client: Any, words: list[str], outputs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The operation and parameters the AWS CLI sends for `aws <service> <operation> --option value ...`."""
    operation = client.meta.service_model.operation_model(
        "".join(part.capitalize() for part in words[2].split("-")))
    members = operation.input_shape.members
    params: dict[str, Any] = {}
    options = words[3:]
    for flag, value in zip(options[::2], options[1::2], strict=True):
        value = re.sub(r"\$\(out (\w+)\)", lambda m: outputs[m.group(1)], value)
        name = re.sub(r"-(\w)", lambda m: m.group(1).upper(), flag.removeprefix("--"))
        shape = members[name]  # a KeyError here is an option the API does not have
        if shape.type_name == "map":
            params[name] = dict(item.split("=", 1) for item in value.split(","))
        elif shape.type_name in ("integer", "long"):
            params[name] = int(value)
        else:
            params[name] = value
    return operation.name, params


def test_the_database_load_submit_is_taken_by_a_fair_share_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    (command,) = runbook_commands("aws batch submit-job")
    with moto_support.moto_aws(monkeypatch, config={"batch": {"use_docker": False}}):
        batch, iam = moto_support.client("batch"), moto_support.client("iam")
        check = FairShareCheck()
        check.patch(monkeypatch)
        queues = _job_queues(batch, iam)
        definition = batch.register_job_definition(
            jobDefinitionName="af2jobs-dbload", type="container",
            containerProperties={"image": "msa:test", "command": ["python", "-m", "af2jobs.dbload"],
                                 "resourceRequirements": [{"type": "VCPU", "value": "2"},
                                                          {"type": "MEMORY", "value": "4096"}]},
        )["jobDefinitionArn"]
        outputs = {"DbLoadJobQueueArn": queues["msa"], "DbLoadJobDefinitionArn": definition}  # both fair share
        operation, params = api_call(batch, command, outputs)
        assert operation == "SubmitJob" and params["parameters"]["databases"] in ("full", "reduced", "mmseqs")
        batch.submit_job(**params)  # refused without shareIdentifier: the MSA queue has a fair-share policy
        (submitted,) = check.submissions
        assert submitted.queue == "af2jobs-msa" and submitted.share_identifier


def test_an_option_the_api_does_not_have_fails_the_runbook_check() -> None:
    """The translation itself can fail: a misspelt option is no member of SubmitJob."""
    import boto3

    batch = boto3.client("batch", region_name=moto_support.REGION, aws_access_key_id="x", aws_secret_access_key="y")
    words = shlex.split("aws batch submit-job --job-name a --job-queue q --job-definition d --share-identifer x")
    with pytest.raises(KeyError, match="shareIdentifer"):
        api_call(batch, words, {})
