"""Job records in DynamoDB: the AWS JobRepository (same behaviour as SqliteJobRepository).

Table layout (one table; `DynamoJobRepository.table_definition(name)` gives the CreateTable arguments, and
template.yaml declares the same, adding point-in-time recovery and encryption):

    Key schema     pk (S, HASH)
    Billing        PAY_PER_REQUEST

    Job item       pk = "JOB#<id>"
                   id, owner, state, created_at, updated_at, idempotency_key (absent when none)   S
                   version                                                                        N
                   created_id = "<created_at>#<id>"   S   sort key of both indexes (newest = largest)
                   entity = "JOB"                     S   partition of created-index
                   request, phases, progress, error   M   (progress/error absent when None)
                   artifacts                          M   name -> S
                   cost                               M   name -> S (the value as JSON text); has_cost BOOL
    Key item       pk = "IDEM#<url-quoted owner>#<idempotency key>", job_id, owner, created_at
                   (written in the same transaction as its job; the owner is quoted so '#' cannot make two
                   (owner, key) pairs collide)

    GSI owner-created-index   owner (S, HASH)   created_id (S, RANGE)   projection ALL   -> an owner's jobs
    GSI created-index         entity (S, HASH)  created_id (S, RANGE)   projection ALL   -> every job (admins)

Key items carry no owner-index attributes (`created_id`, `entity`), so both indexes are sparse and list jobs only.
created-index puts every job in one partition: simple, and ample for a job platform (a partition takes ~1000
writes/s); shard `entity` by month if that ever binds. Indexes are eventually consistent, so a job may appear in
listings a moment after `create` returns; `get` reads strongly consistently.

Phases: a transition into STATE writes `phases.STATE.started_at` (and `ended_at` at once for a terminal STATE)
in the same UpdateItem that checks `state IN (expected...)`. Which expected state it leaves is not known without
a prior read, so the end of the phase it leaves is not written: it is the start of the next phase, filled in when
the item is read. The state graph is acyclic, so each state is entered at most once and the next phase is the
one that started first after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import TypeAdapter

from af2jobs import errors
from af2jobs.models import TERMINAL, Job, JobState, utc_now
from af2jobs.ports import MERGED_FIELDS, MUTABLE_FIELDS, StateFilter
from af2jobs.adapters.records import (
    check_changes, check_limit, decode_token, encode_token, expected_states, states_of,
)

OWNER_INDEX = "owner-created-index"
ALL_INDEX = "created-index"
ENTITY = "JOB"
# DynamoDB refuses items over 400 KB; the indexes (projection ALL) hold a copy of each job, under the same limit.
# The estimate below counts JSON text, a little more than DynamoDB does, so this leaves a margin.
MAX_ITEM_BYTES = 380_000
# A transaction that meets another one on the same item is cancelled with TransactionConflict; it is safe to
# repeat, and the repeat sees the winner's write.
TRANSACTION_ATTEMPTS = 5

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()
_CHANGE_TYPES = {name: TypeAdapter(Job.model_fields[name].annotation) for name in MUTABLE_FIELDS}

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]


# ---------------------------------------------------------------------------------------------------------------
# Attribute values


def _av(value: Any) -> AttributeValue:
    return _SERIALIZER.serialize(value)


def _plain(value: Any) -> Any:
    """A deserialized value with DynamoDB's Decimals turned back into the ints (or floats) they were."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _py(value: AttributeValue) -> Any:
    return _plain(_DESERIALIZER.deserialize(value))


def job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


def idempotency_pk(owner: str, key: str) -> str:
    return f"IDEM#{quote(owner, safe='')}#{key}"


def _created_id(created_at: str, job_id: str) -> str:
    return f"{created_at}#{job_id}"


# ---------------------------------------------------------------------------------------------------------------
# Job <-> item


def job_to_item(job: Job) -> Item:
    data = job.model_dump(mode="json")
    item: dict[str, Any] = {
        "pk": job_pk(job.id),
        "entity": ENTITY,
        "created_id": _created_id(job.created_at, job.id),
        **{k: data[k] for k in ("id", "owner", "state", "created_at", "updated_at", "version", "request")},
        "phases": data["phases"],
        "artifacts": data["artifacts"],
        # Always a map, so an update can add one entry with `SET cost.#k` (a path into a missing map fails).
        "cost": {k: json.dumps(v) for k, v in (data["cost"] or {}).items()},
        "has_cost": data["cost"] is not None,
    }
    for optional in ("progress", "error", "idempotency_key"):
        if data[optional] is not None:
            item[optional] = data[optional]
    return {name: _av(value) for name, value in item.items()}


def job_from_item(item: Item) -> Job:
    raw = {name: _py(value) for name, value in item.items()}
    data = {name: raw[name] for name in Job.model_fields if name in raw and name != "cost"}
    data["cost"] = {k: json.loads(v) for k, v in raw["cost"].items()} if raw["has_cost"] else None
    data["phases"] = _close_phases(raw["phases"], raw["state"])
    return Job.model_validate(data)


def _close_phases(phases: dict[str, dict[str, Any]], state: str) -> dict[str, dict[str, Any]]:
    """Phases with the end of each left phase filled in: the start of the earliest phase that began after it."""
    closed = {}
    for name, phase in phases.items():
        ended_at = phase.get("ended_at")
        if ended_at is None and name != state:
            later = [p["started_at"] for n, p in phases.items() if n != name and p["started_at"] >= phase["started_at"]]
            ended_at = min(later, default=None)
        closed[name] = {"started_at": phase["started_at"], "ended_at": ended_at}
    return closed


def _item_bytes(item: Item) -> int:
    return len(json.dumps(item, default=str).encode())


# ---------------------------------------------------------------------------------------------------------------
# Listing helpers








# ---------------------------------------------------------------------------------------------------------------
# Expressions


class _Expression:
    """Placeholders for one request's expressions. Every name is a placeholder: `state` and `owner` are reserved
    words, and artifact names may hold any character."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValue] = {}
        self._placeholders: dict[str, str] = {}
        self._set: list[str] = []
        self._remove: list[str] = []

    def path(self, *parts: str) -> str:
        out = []
        for part in parts:
            if part not in self._placeholders:
                self._placeholders[part] = f"#n{len(self._placeholders)}"
                self.names[self._placeholders[part]] = part
            out.append(self._placeholders[part])
        return ".".join(out)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _av(value)
        return placeholder

    def set(self, *path: str, value: Any) -> None:
        self._set.append(f"{self.path(*path)} = {self.value(value)}")

    def increment(self, name: str) -> None:
        self._set.append(f"{self.path(name)} = {self.path(name)} + {self.value(1)}")

    def remove(self, name: str) -> None:
        self._remove.append(self.path(name))

    def one_of(self, name: str, options: Collection[str]) -> str:
        return f"{self.path(name)} IN ({', '.join(self.value(o) for o in sorted(options))})"

    def update_expression(self) -> str:
        clauses = [f"SET {', '.join(self._set)}"]
        if self._remove:
            clauses.append(f"REMOVE {', '.join(self._remove)}")
        return " ".join(clauses)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ExpressionAttributeNames": self.names}
        if self.values:  # DynamoDB rejects an empty map
            out["ExpressionAttributeValues"] = self.values
        return out


def _validated(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The changes as JSON-ready values, checked against the Job model's field types."""
    check_changes(changes)
    out = {}
    for name, value in changes.items():
        adapter = _CHANGE_TYPES[name]
        out[name] = adapter.dump_python(adapter.validate_python(value), mode="json")
    return out


def _apply_changes(expr: _Expression, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if name in MERGED_FIELDS and value is not None:
            # One path per entry: concurrent writers adding different entries never erase each other's.
            for key, entry in value.items():
                expr.set(name, key, value=json.dumps(entry) if name == "cost" else entry)
            if name == "cost":
                expr.set("has_cost", value=True)
        elif name == "cost":
            expr.set("cost", value={})
            expr.set("has_cost", value=False)
        elif value is None:
            expr.remove(name)
        else:
            expr.set(name, value=value)


def _cancellation_codes(exc: Exception) -> list[str]:
    reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
    return [reason.get("Code", "None") for reason in reasons]


# ---------------------------------------------------------------------------------------------------------------
# The repository


class DynamoJobRepository:
    """JobRepository on one DynamoDB table (layout in the module docstring). Thread-safe (boto3 clients are)."""

    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self._client = client if client is not None else boto3.client("dynamodb")
        self._errors = self._client.exceptions

    @staticmethod
    def table_definition(table_name: str) -> dict[str, Any]:
        """CreateTable keyword arguments for the jobs table; template.yaml declares the same keys and indexes."""

        def index(name: str, partition: str) -> dict[str, Any]:
            return {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": partition, "KeyType": "HASH"},
                    {"AttributeName": "created_id", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }

        return {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "owner", "entity", "created_id")
            ],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [index(OWNER_INDEX, "owner"), index(ALL_INDEX, "entity")],
        }

    # -- create ----------------------------------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        item = job_to_item(job)
        if _item_bytes(item) > MAX_ITEM_BYTES:
            raise errors.PayloadTooLargeError(
                f"job {job.id} is too large for a DynamoDB record; upload the FASTA under input/ and submit "
                "its file_name instead of an inline sequence",
                field="sequence",
            )
        if job.idempotency_key is None:
            return self._put_new(job, item)
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self._put_with_key(job, item)
                return job
            except self._errors.TransactionCanceledException as exc:
                codes = _cancellation_codes(exc)
                if codes[1:2] == ["ConditionalCheckFailed"]:
                    existing = self._by_key(job.owner, job.idempotency_key)
                    if existing is not None:
                        return existing
                    # The key's job went between our write and our read: the key is free, try again.
                elif codes[:1] == ["ConditionalCheckFailed"]:
                    raise errors.ConflictError(f"job {job.id} already exists") from None
                elif "TransactionConflict" not in codes:
                    raise
            time.sleep(0.05 * 2**attempt)
        raise errors.ConflictError("too many concurrent submissions with this idempotency key; try again")

    def _put_new(self, job: Job, item: Item) -> Job:
        try:
            self._client.put_item(
                TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except self._errors.ConditionalCheckFailedException:
            raise errors.ConflictError(f"job {job.id} already exists") from None
        return job

    def _put_with_key(self, job: Job, item: Item) -> None:
        assert job.idempotency_key is not None
        key_item = {
            "pk": _av(idempotency_pk(job.owner, job.idempotency_key)),
            "job_id": _av(job.id),
            "owner": _av(job.owner),
            "created_at": _av(job.created_at),
        }
        # Both or neither: a key item never points at a job that was not stored, and a job with a key always has
        # its key item (which is what makes a second submission find it).
        self._client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table_name, "Item": new, "ConditionExpression": "attribute_not_exists(pk)"}}
                for new in (item, key_item)
            ]
        )

    def _by_key(self, owner: str, key: str) -> Job | None:
        """The job holding (owner, key); None, after removing the key item, if that job no longer exists."""
        pk = idempotency_pk(owner, key)
        found = self._client.get_item(TableName=self.table_name, Key={"pk": _av(pk)}, ConsistentRead=True)
        if "Item" not in found:
            return None  # deleted meanwhile: the caller retries the create
        job_id = _py(found["Item"]["job_id"])
        try:
            return self.get(job_id)
        except errors.NotFoundError:
            # Only a record removed outside this class leaves a key behind; free the key so submits work again.
            self._client.delete_item(
                TableName=self.table_name,
                Key={"pk": _av(pk)},
                ConditionExpression="job_id = :id",
                ExpressionAttributeValues={":id": _av(job_id)},
            )
            return None

    # -- read ------------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        found = self._client.get_item(TableName=self.table_name, Key={"pk": _av(job_pk(job_id))}, ConsistentRead=True)
        if "Item" not in found:
            raise errors.NotFoundError(f"no job {job_id}", field="id")
        return job_from_item(found["Item"])

    def list(
        self,
        owner: str | None,
        state: StateFilter = None,
        limit: int = 50,
        token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        check_limit(limit)
        after = _created_id(*decode_token(token)) if token is not None else None
        jobs: list[Job] = []
        # One more than asked for tells whether a next page exists.
        for item in self._query(owner, states_of(state), after, limit + 1):
            jobs.append(job_from_item(item))
            if len(jobs) > limit:
                break
        page = jobs[:limit]
        return page, (encode_token(page[-1]) if len(jobs) > limit else None)

    def _query(
        self, owner: str | None, states: frozenset[JobState] | None, after: str | None, chunk: int
    ) -> Iterator[Item]:
        """Matching items, newest first. Keyset pagination (created_id < the last one shown), as locally: jobs
        created between pages sort first, so they neither repeat nor hide a row."""
        expr = _Expression()
        if owner is None:
            index, condition = ALL_INDEX, f"{expr.path('entity')} = {expr.value(ENTITY)}"
        else:
            index, condition = OWNER_INDEX, f"{expr.path('owner')} = {expr.value(owner)}"
        if after is not None:
            condition += f" AND {expr.path('created_id')} < {expr.value(after)}"
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ScanIndexForward": False,
            # Limit counts items read before the filter, so a filtered page may need several reads.
            "Limit": chunk,
        }
        if states is not None:
            request["FilterExpression"] = expr.one_of("state", {s.value for s in states})
        request.update(expr.params())
        while True:
            response = self._client.query(**request)
            yield from response["Items"]
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- write -----------------------------------------------------------------------------------------------

    def transition(self, job_id: str, expected_from: Collection[JobState], to: JobState, **changes: Any) -> Job:
        to = JobState(to)
        expected = expected_states(expected_from, to)
        fields = _validated(changes)
        now = utc_now()
        expr = _Expression()
        expr.set("state", value=to.value)
        expr.set("phases", to.value, value={"started_at": now, "ended_at": now if to in TERMINAL else None})
        return self._write(job_id, expr, fields, now, expected, f"it cannot move to {to.value}")

    def update(self, job_id: str, *, expected_from: Collection[JobState] | None = None, **changes: Any) -> Job:
        expected = frozenset(JobState(s) for s in expected_from) if expected_from is not None else None
        return self._write(job_id, _Expression(), _validated(changes), utc_now(), expected, "not updated")

    def _write(
        self,
        job_id: str,
        expr: _Expression,
        changes: dict[str, Any],
        now: str,
        expected: frozenset[JobState] | None,
        refusal: str,
    ) -> Job:
        """One conditional UpdateItem: the check and the change are a single atomic step in DynamoDB."""
        _apply_changes(expr, changes)
        expr.set("updated_at", value=now)
        expr.increment("version")
        condition = f"attribute_exists({expr.path('pk')})"
        if expected is not None:
            condition += f" AND {expr.one_of('state', {s.value for s in expected})}"
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key={"pk": _av(job_pk(job_id))},
                UpdateExpression=expr.update_expression(),
                ConditionExpression=condition,
                ReturnValues="ALL_NEW",
                # The failed check returns the item as it is, which tells a missing job from a moved one.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **expr.params(),
            )
        except self._errors.ConditionalCheckFailedException as exc:
            current = exc.response.get("Item")
            if current is None:
                raise errors.NotFoundError(f"no job {job_id}", field="id") from None
            wanted = "/".join(sorted(s.value for s in expected or ()))
            raise errors.ConflictError(f"job {job_id} is {_py(current['state'])}, not {wanted}; {refusal}") from None
        return job_from_item(response["Attributes"])

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        expr = _Expression()
        condition = expr.one_of("state", {s.value for s in TERMINAL})
        delete_job = {
            "TableName": self.table_name,
            "Key": {"pk": _av(job_pk(job_id))},
            "ConditionExpression": condition,
            **expr.params(),
        }
        try:
            if job.idempotency_key is None:
                self._client.delete_item(**delete_job)
            else:
                self._delete_with_key(job, delete_job)
        except self._errors.ConditionalCheckFailedException:
            self._refuse_delete(job_id)
        except self._errors.TransactionCanceledException as exc:
            if "TransactionConflict" in _cancellation_codes(exc):
                raise errors.ConflictError(f"job {job_id} is being changed; try deleting it again") from None
            self._refuse_delete(job_id)

    def _refuse_delete(self, job_id: str) -> None:
        current = self.get(job_id)  # NotFoundError if it went meanwhile
        raise errors.ConflictError(f"job {job_id} is {current.state.value}; only finished jobs can be deleted")

    def _delete_with_key(self, job: Job, delete_job: dict[str, Any]) -> None:
        assert job.idempotency_key is not None
        # The key goes with its job, so the same key may be used again (as locally, where it is a column).
        self._client.transact_write_items(
            TransactItems=[
                {"Delete": delete_job},
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": {"pk": _av(idempotency_pk(job.owner, job.idempotency_key))},
                        "ConditionExpression": "attribute_not_exists(job_id) OR job_id = :id",
                        "ExpressionAttributeValues": {":id": _av(job.id)},
                    }
                },
            ]
        )
