"""What `make images` asks AWS: the stack's ECR repository URIs, and a password for `docker login`.

    python batch_image/ecr.py uri --stack af2jobs MsaRepositoryUri     -> 123456789012.dkr.ecr.REGION.amazonaws.com/...
    python batch_image/ecr.py password | docker login --username AWS --password-stdin REGISTRY

boto3 (already in the project's environment) instead of the AWS CLI, so docker is the only extra tool needed.
The region and credentials are boto3's usual ones (AWS_REGION / AWS_PROFILE, ~/.aws).
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any


def stack_output(cloudformation: Any, stack: str, key: str) -> str:
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if key not in outputs:
        raise SystemExit(f"stack {stack} has no output {key} (outputs: {', '.join(sorted(outputs)) or 'none'}); "
                         "deploy it first: make deploy")
    return outputs[key]


def login_password(ecr: Any) -> str:
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    if user != "AWS" or not password:
        raise SystemExit("ECR returned an authorization token of an unexpected form")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    uri = commands.add_parser("uri", help="print a stack output (a repository URI)")
    uri.add_argument("--stack", required=True)
    uri.add_argument("output")
    commands.add_parser("password", help="print a docker login password for this account's ECR")
    args = parser.parse_args(argv)

    import boto3

    if args.command == "uri":
        print(stack_output(boto3.client("cloudformation"), args.stack, args.output))
    else:
        print(login_password(boto3.client("ecr")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
