"""The API Gateway TOKEN authorizer's logic: the same key check as the API itself (auth.verify_key).

API Gateway caches an authorizer's answer per token, so the policy allows every route of the API's stage, not just
the method that happened to be called first; what each route then lets the caller do is the API's business."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
)

from af2jobs import errors
from af2jobs.api.auth import verify_key
from af2jobs.ports import ApiKeyStore

# API Gateway answers 401 only for this exact message; any other error becomes a 500.
UNAUTHORIZED = "Unauthorized"


def authorize(event: Mapping[str, Any], keys: ApiKeyStore) -> dict[str, Any]:
    """An IAM policy allowing the key's owner every route of the API, with context {owner, admin} for the API
    Lambda; Exception("Unauthorized") for a missing, unknown or revoked key."""
    token_event = APIGatewayAuthorizerTokenEvent(dict(event))
    try:
        principal = verify_key(keys, token_event.get("authorizationToken"))
    except errors.AuthError:
        raise Exception(UNAUTHORIZED) from None  # noqa: TRY002 - the exception API Gateway's contract asks for
    arn = token_event.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=principal.owner,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        # Context values reach the API Lambda as strings; auth.principal_from_authorizer reads them back.
        context={"owner": principal.owner, "admin": principal.admin},
        partition=arn.partition,  # aws-cn in the seed's Ningxia region
    )
    policy.allow_all_routes()
    return policy.asdict()
