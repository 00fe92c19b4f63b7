"""API keys on the wire: the Authorization header carries the bare key (as in the seed) or `Bearer <key>`; behind
API Gateway, a TOKEN authorizer has already checked it and passes the caller on in the request context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from af2jobs import errors
from af2jobs.models import Principal
from af2jobs.ports import ApiKeyStore

AUTH_HEADER = "Authorization"
_BEARER = "bearer "
# Messages never quote what the caller sent: it may be a real key with a typo, or someone else's.
MISSING_KEY = "missing API key: send it in the Authorization header (the bare key or 'Bearer <key>')"
INVALID_KEY = "invalid or revoked API key"


def key_from_header(value: str | None) -> str | None:
    """The key in an Authorization header value, without an optional 'Bearer ' scheme; None if there is none."""
    if value is None:
        return None
    value = value.strip()
    if value[: len(_BEARER)].lower() == _BEARER:
        value = value[len(_BEARER) :].strip()
    return value or None


def principal_from_authorizer(context: Mapping[str, Any] | None) -> Principal | None:
    """The caller as our TOKEN authorizer described it, or None if no authorizer ran.

    API Gateway hands the authorizer's context on with every value turned into a string, so admin arrives as
    "true"/"false"; a real boolean is accepted too (direct invocations, SAM local)."""
    if not context:
        return None
    owner = context.get("owner")
    if not isinstance(owner, str) or not owner:
        return None
    admin = context.get("admin")
    return Principal(owner=owner, admin=admin is True or str(admin).lower() == "true")


def verify_key(keys: ApiKeyStore, header: str | None) -> Principal:
    """The owner of the key in `header`; AuthError (401) when it is missing, malformed, unknown or revoked."""
    key = key_from_header(header)
    if key is None:
        raise errors.AuthError(MISSING_KEY, field=AUTH_HEADER)
    principal = keys.verify(key)
    if principal is None:
        raise errors.AuthError(INVALID_KEY, field=AUTH_HEADER)
    return principal


def authenticate(event: BaseProxyEvent, keys: ApiKeyStore, *, trust_authorizer: bool) -> Principal:
    """Who sent `event`. Behind API Gateway (trust_authorizer) the authorizer's verdict is used as is; without
    one (the local server, or a Lambda invoked directly) the key is checked here."""
    if trust_authorizer:
        authorizer = (event.get("requestContext") or {}).get("authorizer")
        principal = principal_from_authorizer(authorizer)
        if principal is not None:
            return principal
    return verify_key(keys, event.headers.get(AUTH_HEADER))  # headers: case-insensitive
