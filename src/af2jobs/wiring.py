"""Builds the job service from Settings: the only place that picks adapters (local or AWS).

    mode "local"   SQLite (jobs and API keys in settings.jobs_db), a directory store (settings.artifacts_dir),
                   an in-process Worker behind LocalOrchestrator, LocalNotifier (outbox, SMTP, webhook)
    mode "aws"     DynamoDB, S3, Step Functions, SNS; the AWS modules are imported only in this mode
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from af2jobs import apikeys, atomic
from af2jobs.links import LinkSigner
from af2jobs.ports import ApiKeyStore, ArtifactStore, JobLogs, JobRepository, Notifier, Orchestrator, OwnerMail
from af2jobs.service import JobService
from af2jobs.settings import Settings, apply_device_memory

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the local adapters load in local mode only (a Lambda's cold start loads none of them)
    from af2jobs.adapters.local.worker import Worker


@dataclass
class Services:
    settings: Settings
    service: JobService
    repo: JobRepository
    store: ArtifactStore
    keys: ApiKeyStore
    orchestrator: Orchestrator
    notifier: Notifier
    worker: Worker | None  # local mode only; the caller starts it (`af2 serve`), building one starts nothing
    # AWS: a running stage's CloudWatch log (the local worker writes the stored log as it goes: no need)
    logs: JobLogs | None = None
    links: LinkSigner | None = None  # signs the mail's links, which GET /jobs/{id}/link checks

    def close(self) -> None:
        """Stop the worker if it was started and close local database connections."""
        if self.worker is not None:
            self.worker.stop()
        for part in (self.repo, self.keys):
            close = getattr(part, "close", None)
            if close is not None:
                close()


def use_region(settings: Settings) -> None:
    """AF2_REGION, when set, is the region of every AWS client the platform makes; otherwise boto3 resolves it
    (AWS_REGION, as in Lambda and Batch, or the profile's)."""
    if settings.region:
        import boto3

        boto3.setup_default_session(region_name=settings.region)


def key_store(settings: Settings) -> ApiKeyStore:
    """The API key store alone (for `af2 keys`, and the authorizer, which need nothing else)."""
    if settings.mode == "aws":
        from af2jobs.adapters.aws import DynamoApiKeyStore

        use_region(settings)

        return DynamoApiKeyStore(table_name=settings.keys_table)
    from af2jobs.adapters.local.sqlite import SqliteApiKeyStore

    return SqliteApiKeyStore(settings.jobs_db)


def link_signer(settings: Settings) -> LinkSigner | None:
    """What signs the API links of a job's mail (af2jobs.links). AWS: the stack's Secrets Manager secret
    (AF2_LINK_SECRET_ARN; None without it) and the API's URL (AF2_API_URL: the notifier signs with it, the API,
    which cannot know its own URL without a cycle in the template, only checks). Local: a secret made once in the
    data directory, and the server's own address."""
    if settings.mode == "aws":
        if not settings.link_secret_arn:
            return None
        from af2jobs.adapters.aws.secrets import secret_bytes

        use_region(settings)
        return LinkSigner(secret_bytes(settings.link_secret_arn), settings.api_url or "", settings.link_seconds)
    secret = atomic.create_once(settings.link_secret_file, secrets.token_bytes(32))
    base = settings.api_url or f"http://{settings.host}:{settings.port}"
    return LinkSigner(secret, base, settings.link_seconds)


def owner_mail(settings: Settings) -> OwnerMail | None:
    """Where `af2 keys` routes an owner's job mail: the topic's e-mail subscriptions on AWS. None locally, where
    the notifier reads the owners' addresses from the keys at each event."""
    if settings.mode != "aws":
        return None
    from af2jobs.adapters.aws.sns import SnsOwnerMail

    use_region(settings)
    return SnsOwnerMail(settings.topic_arn)


def build(settings: Settings, *, run_overrides: Mapping[str, Any] | None = None, isolate: bool = True) -> Services:
    """The service and its adapters for settings.mode. run_overrides (local only) are RunConfig fields applied to
    every job, e.g. {"profile": "tiny"} for tests and `af2 serve --profile tiny`. isolate (local only): each GPU
    slot predicts in a process of its own (adapters/local/slot.py); False predicts in the slot's thread."""
    apply_device_memory(settings)
    if settings.mode == "aws":
        return _build_aws(settings)
    return _build_local(settings, run_overrides, isolate)


@dataclass
class LocalParts:
    """What a local job's pass writes to: its record, its files, its messages (and the keys and link signer)."""

    repo: JobRepository
    store: ArtifactStore
    keys: ApiKeyStore
    links: LinkSigner | None
    notifier: Notifier


def local_parts(settings: Settings) -> LocalParts:
    """The local adapters on settings.data_dir: what `af2 serve` and each of its prediction processes open."""
    from af2jobs.adapters.local.files import DirectoryArtifactStore
    from af2jobs.adapters.local.notify import LocalNotifier
    from af2jobs.adapters.local.sqlite import SqliteJobRepository

    repo = SqliteJobRepository(settings.jobs_db)
    store = DirectoryArtifactStore(settings.artifacts_dir)
    keys = key_store(settings)
    links = link_signer(settings)
    notifier = LocalNotifier(
        settings.outbox_dir, smtp_host=settings.smtp_host, smtp_port=settings.smtp_port,
        smtp_from=settings.smtp_from, to=settings.notify_email, webhook_url=settings.webhook_url, store=store,
        owner_addresses=lambda owner: apikeys.mail_addresses(keys.list(owner), owner), links=links,
    )
    return LocalParts(repo, store, keys, links, notifier)


def _build_local(settings: Settings, run_overrides: Mapping[str, Any] | None, isolate: bool) -> Services:
    from af2jobs.adapters.local.worker import LocalOrchestrator, Worker

    parts = local_parts(settings)
    worker = Worker(parts.repo, parts.store, parts.notifier, settings, run_overrides=run_overrides, isolate=isolate,
                    make_parts=local_parts)
    orchestrator = LocalOrchestrator(worker)
    service = JobService(parts.repo, parts.store, orchestrator, parts.notifier, settings)
    return Services(settings, service, parts.repo, parts.store, parts.keys, orchestrator, parts.notifier, worker,
                    links=parts.links)


def _build_aws(settings: Settings) -> Services:
    # Settings has already checked that every AWS name is set (ConfigurationError naming the variable).
    from af2jobs.adapters import aws

    use_region(settings)
    repo = aws.DynamoJobRepository(table_name=settings.jobs_table)
    store = aws.S3ArtifactStore(bucket=settings.bucket)
    orchestrator = aws.StepFunctionsOrchestrator(state_machine_arn=settings.state_machine_arn, repo=repo)
    try:
        links = link_signer(settings)
    except Exception:  # the key-less links fail (403), every other route and the mail's presigned URLs still work
        log.exception("the link secret %s could not be read: mail links are presigned URLs, and GET "
                      "/jobs/{id}/link refuses every link", settings.link_secret_arn)
        links = None
    signing = links if links is not None and links.base_url else None  # links to nowhere would be no links
    notifier = aws.SnsNotifier(topic_arn=settings.topic_arn, store=store, links=signing)
    service = JobService(repo, store, orchestrator, notifier, settings)
    logs = aws.CloudWatchJobLogs(settings.batch_log_group) if settings.batch_log_group else None
    return Services(settings, service, repo, store, key_store(settings), orchestrator, notifier, None, logs, links)
