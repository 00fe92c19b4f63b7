"""API keys in DynamoDB: the AWS ApiKeyStore (same contract and hash format as SqliteApiKeyStore).

Table layout (`DynamoApiKeyStore.table_definition(name)`; template.yaml declares the same):

    Key schema   key_id (S, HASH)      Billing PAY_PER_REQUEST      no indexes
    Item         key_id, owner, kdf, created_at, revoked_at (absent until revoked)   S
                 admin                                                               BOOL
                 salt (16 bytes), hash (32 bytes, scrypt of the secret)              B

The plaintext key exists only in the value `create` returns. The authorizer's `verify` is one strongly consistent
GetItem by key id; `list` scans, which suits a table of tens or hundreds of keys read by an admin command.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import boto3

from af2jobs import errors

# One key format and one hash for both stores, so the scheme cannot drift between local and AWS.
from af2jobs.adapters.local.sqlite import _KDF, _KEY_RE, _OWNER_RE, KEY_PREFIX, _hash_secret
from af2jobs.models import Principal, utc_now
from af2jobs.ports import ApiKeyInfo

_LISTED = ("key_id", "owner", "admin", "created_at", "revoked_at")


class DynamoApiKeyStore:
    """ApiKeyStore on one DynamoDB table: keys `af2_<id>_<secret>`, stored as a salted scrypt hash of the secret."""

    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = client if client is not None else boto3.client("dynamodb")

    @staticmethod
    def table_definition(table_name: str) -> dict[str, Any]:
        """CreateTable keyword arguments for the keys table."""
        return {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "key_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
        }

    def create(self, owner: str, admin: bool = False) -> str:
        if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
            raise errors.ValidationError("owner must be 1-200 characters without control characters", field="owner")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        self._client.put_item(
            TableName=self.table_name,
            Item={
                "key_id": {"S": key_id},
                "owner": {"S": owner},
                "admin": {"BOOL": bool(admin)},
                "kdf": {"S": _KDF},
                "salt": {"B": salt},
                "hash": {"B": _hash_secret(secret, salt, _KDF)},
                "created_at": {"S": utc_now()},
            },
            # 64 random bits make a collision unlikely, not impossible; never overwrite someone's key.
            ConditionExpression="attribute_not_exists(key_id)",
        )
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def verify(self, key: str) -> Principal | None:
        match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            return None
        key_id, secret = match.groups()
        item = self._client.get_item(
            TableName=self.table_name, Key={"key_id": {"S": key_id}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            # Spend the same time as a real check so response times do not tell which key ids exist.
            _hash_secret(secret, b"\0" * 16, _KDF)
            return None
        ok = hmac.compare_digest(_hash_secret(secret, item["salt"]["B"], item["kdf"]["S"]), item["hash"]["B"])
        if not ok or "revoked_at" in item:
            return None
        return Principal(owner=item["owner"]["S"], admin=item["admin"]["BOOL"])

    def list(self, owner: str | None = None) -> list[ApiKeyInfo]:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            # Salt and hash never leave the table, not even into this process.
            "ProjectionExpression": ", ".join(f"#{name}" for name in _LISTED),
            "ExpressionAttributeNames": {f"#{name}": name for name in _LISTED},
        }
        if owner is not None:
            request["FilterExpression"] = "#owner = :owner"
            request["ExpressionAttributeValues"] = {":owner": {"S": owner}}
        infos = []
        for page in self._client.get_paginator("scan").paginate(**request):
            infos.extend(_info(item) for item in page["Items"])
        return sorted(infos, key=lambda i: (i.created_at, i.key_id))

    def revoke(self, key_id: str) -> None:
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"key_id": {"S": key_id}},
                # if_not_exists keeps the first revocation time: revoking twice changes nothing.
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeValues={":now": {"S": utc_now()}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise errors.NotFoundError(f"no API key {key_id}", field="key_id") from None


def _info(item: dict[str, Any]) -> ApiKeyInfo:
    revoked = item.get("revoked_at")
    return ApiKeyInfo(
        key_id=item["key_id"]["S"],
        owner=item["owner"]["S"],
        admin=item["admin"]["BOOL"],
        created_at=item["created_at"]["S"],
        revoked_at=revoked["S"] if revoked is not None else None,
    )
