"""moto set-up shared by the AWS adapter tests: fake credentials, tables and a bucket made from the adapters'
own definitions, and per-request atomicity for moto's DynamoDB writes."""

from __future__ import annotations

import functools
import importlib.util
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from af2jobs.adapters.aws import DynamoApiKeyStore, DynamoJobRepository, S3ArtifactStore

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")


def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never the developer's real profile or credentials, whatever the environment holds.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def _atomic_dynamodb_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each conditional write as one atomic step; moto checks the condition and then applies
    the change in Python with no lock, so two threads could both pass one check. A lock around each write
    request gives moto the service's per-request atomicity. It does not order the callers: the threads still
    race, and only the adapters' conditions decide who wins."""
    # Re-entrant: moto's transact_write_items calls its own put_item and update_item.
    lock = threading.RLock()

    def atomic(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return locked

    for name in _WRITES:
        monkeypatch.setattr(DynamoDBBackend, name, atomic(getattr(DynamoDBBackend, name)))


@contextmanager
def moto_aws(monkeypatch: pytest.MonkeyPatch, config: dict[str, Any] | None = None) -> Iterator[None]:
    _fake_credentials(monkeypatch)
    _atomic_dynamodb_writes(monkeypatch)
    with mock_aws(config=config):  # type: ignore[arg-type]
        yield


@functools.cache
def _session() -> boto3.session.Session:
    # moto resets boto3's default session at every mock start, so each test's clients would parse their service
    # models again (~0.4 s a client); one session keeps that cache for the run. Its credentials are fake.
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


def client(service: str) -> Any:
    # S3 as the adapter builds it by default: SigV4 presigned URLs (botocore still presigns SigV2 otherwise).
    config = Config(signature_version="s3v4") if service == "s3" else None
    return _session().client(service, config=config)


def jobs_repo(table: str = "af2-jobs", dynamodb: Any = None) -> DynamoJobRepository:
    """A repository on a new table made from the repository's own definition (as template.yaml declares it)."""
    dynamodb = dynamodb or client("dynamodb")
    dynamodb.create_table(**DynamoJobRepository.table_definition(table))
    return DynamoJobRepository(table, client=dynamodb)


def key_store(table: str = "af2-keys", dynamodb: Any = None) -> DynamoApiKeyStore:
    dynamodb = dynamodb or client("dynamodb")
    dynamodb.create_table(**DynamoApiKeyStore.table_definition(table))
    return DynamoApiKeyStore(table, client=dynamodb)


def artifact_store(bucket: str = "af2-artifacts", s3: Any = None) -> S3ArtifactStore:
    s3 = s3 or client("s3")
    s3.create_bucket(Bucket=bucket)
    return S3ArtifactStore(bucket, client=s3)


class CallLog:
    """The operations a boto3 client sends (they still go to moto): names and parameters, in order."""

    def __init__(self, aws_client: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        service = aws_client.meta.service_model.service_name
        aws_client.meta.events.register(f"provide-client-params.{service}", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    @property
    def operations(self) -> list[str]:
        return [name for name, _ in self.calls]

    def clear(self) -> None:
        self.calls.clear()


def load_function(name: str) -> ModuleType:
    """functions/<name>/app.py as Lambda loads it: its module-level code runs now (Settings from the environment),
    as a module of its own each time."""
    path = Path(__file__).resolve().parents[2] / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"function_{name}_{uuid.uuid4().hex[:8]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
