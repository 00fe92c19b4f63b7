"""API keys in DynamoDB: the AWS ApiKeyStore (same contract and hash format as SqliteApiKeyStore).

Table layout (`DynamoApiKeyStore.table_definition(name)`; template.yaml declares the same):

    Key schema   key_id (S, HASH)      Billing PAY_PER_REQUEST      no indexes
    Item         key_id, owner, kdf, created_at, revoked_at (absent until revoked),
                 email (absent when the key has none)                               S
                 admin                                                               BOOL
                 salt (16 bytes), hash (32 bytes, scrypt of the secret)              B

The plaintext key exists only in the value `create` returns. The authorizer's `verify` is one strongly consistent
GetItem by key id; `list` scans, which suits a table of tens or hundreds of keys read by an admin command.
"""

from __future__ import annotations

from typing import Any

import boto3

# One key format and one hash for both stores, so the scheme cannot drift between local and AWS.
from af2jobs import apikeys, errors
from af2jobs.models import Principal, utc_now
from af2jobs.ports import ApiKeyInfo

_LISTED = ("key_id", "owner", "admin", "created_at", "revoked_at", "email")


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

    def create(self, owner: str, admin: bool = False, email: str | None = None) -> str:
        apikeys.check_owner(owner)
        if email is not None:
            apikeys.check_email(email)
        key = apikeys.new_key()
        self._client.put_item(
            TableName=self.table_name,
            Item={
                "key_id": {"S": key.key_id},
                "owner": {"S": owner},
                "admin": {"BOOL": bool(admin)},
                "kdf": {"S": key.kdf},
                "salt": {"B": key.salt},
                "hash": {"B": key.hash},
                "created_at": {"S": utc_now()},
                **({"email": {"S": email}} if email is not None else {}),
            },
            # 64 random bits make a collision unlikely, not impossible; never overwrite someone's key.
            ConditionExpression="attribute_not_exists(key_id)",
        )
        return key.text

    def verify(self, key: str) -> Principal | None:
        return apikeys.verify(key, self._stored)

    def _stored(self, key_id: str) -> apikeys.StoredKey | None:
        item = self._client.get_item(
            TableName=self.table_name, Key={"key_id": {"S": key_id}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return apikeys.StoredKey(owner=item["owner"]["S"], admin=item["admin"]["BOOL"], salt=item["salt"]["B"],
                                 kdf=item["kdf"]["S"], hash=item["hash"]["B"], revoked="revoked_at" in item)

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
    revoked, email = item.get("revoked_at"), item.get("email")
    return ApiKeyInfo(
        key_id=item["key_id"]["S"],
        owner=item["owner"]["S"],
        admin=item["admin"]["BOOL"],
        created_at=item["created_at"]["S"],
        revoked_at=revoked["S"] if revoked is not None else None,
        email=email["S"] if email is not None else None,
    )
