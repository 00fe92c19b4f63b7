"""A Secrets Manager secret's bytes: the key that signs the API links in a job's mail (af2jobs.links)."""

from __future__ import annotations

from typing import Any

import boto3

from af2jobs import errors


def secret_bytes(secret_arn: str, client: Any = None) -> bytes:
    """The secret's current value (SecretString as UTF-8, or SecretBinary)."""
    client = client if client is not None else boto3.client("secretsmanager")
    try:
        value = client.get_secret_value(SecretId=secret_arn)
    except client.exceptions.ResourceNotFoundException:
        raise errors.ConfigurationError(f"AF2_LINK_SECRET_ARN names no secret: {secret_arn}") from None
    return value["SecretBinary"] if "SecretBinary" in value else value["SecretString"].encode()


__all__ = ["secret_bytes"]
