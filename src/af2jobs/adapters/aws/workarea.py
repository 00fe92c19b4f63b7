"""S3 objects the Batch stages keep beside the artifact store's files: a job's work area and the shared MSA cache.

    jobs/<id>/work/<slug>/...             one record's pipeline work dir after its MSA stage (msas/, features.pkl,
                                          timings.json, the MSA-done marker): the file contract between the MSA
                                          job and the predict job, which may run on different instances
    jobs/<id>/work/.batch/<batch id>.json what a Batch job that failed says about it (stage, error type, message);
                                          ".batch": no record slug starts with a dot
    cache/msa/databases.json              identity of the databases the latest MSA job searched
    cache/msa/<key>/report.json, ...      one MSA cache entry, the layout of af2jobs.pipeline.msa's local cache

Work objects are written with the tag af2jobs:class=work, which the bucket's lifecycle rule expires after 7 days:
a lifecycle filter takes a prefix, not a pattern, so jobs/<id>/work/ cannot be named there. (S3ArtifactStore
writes untagged objects and has no way to pass a tag, hence this module's own client.) The Batch role may not
delete objects; expiry removes the work area.

The cache lives outside the store's `input/` and `jobs/` keys because it belongs to no job. The Lambda functions
run outside the VPC and cannot read the databases on the file system, so the MSA jobs publish the identity of
the databases they searched (the manifest); Validate computes a record's cache key from it without the files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore.exceptions import ClientError

from af2jobs.layout import MSA_MANIFEST_KEY, failure_key, msa_entry_prefix, work_prefix

log = logging.getLogger(__name__)

WORK_TAG = {"af2jobs:class": "work"}
# An entry is complete once its report exists: it is uploaded last (as the local cache renames it into place last).
REPORT = "report.json"


def _is_missing(exc: ClientError) -> bool:
    # GetObject says NoSuchKey; HeadObject has no body and says only 404.
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def _tagging() -> str:
    return urlencode(WORK_TAG)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


class S3Objects:
    """The bucket's objects by key, through one client: upload a folder, download a prefix, read small JSON."""

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client if client is not None else boto3.client("s3")

    def upload_file(self, path: Path, key: str, extra: dict[str, str] | None = None) -> None:
        # upload_file goes multipart for large files (features.pkl of a long sequence).
        self._client.upload_file(str(path), self.bucket, key, ExtraArgs=extra or None)

    def download_prefix(self, prefix: str, directory: Path) -> int:
        count = 0
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                target = directory / obj["Key"].removeprefix(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                self._client.download_file(self.bucket, obj["Key"], str(target))
                count += 1
        return count

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def read_json(self, key: str) -> Any | None:
        """The object's JSON, or None when it is missing or not JSON (a reader then does without it)."""
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        try:
            return json.loads(body)
        except ValueError:
            log.warning("s3://%s/%s is not JSON; ignored", self.bucket, key)
            return None

    def put_json(self, key: str, data: Any, extra: dict[str, str] | None = None) -> None:
        self._client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(data, indent=2).encode(),
                                ContentType="application/json", **(extra or {}))


class S3WorkArea:
    """A job's intermediates in S3 (see the module docstring), tagged for expiry."""

    def __init__(self, objects: S3Objects) -> None:
        self._objects = objects

    def save(self, job_id: str, slug: str, workdir: Path, last: str | None = None) -> list[str]:
        """Upload a record's work dir, the file named `last` (its done-marker) after all others, so that a reader
        who finds the marker finds everything; returns the keys written."""
        prefix, tag = work_prefix(job_id, slug), {"Tagging": _tagging()}
        marker = workdir / last if last is not None else None
        keys = []
        for path in _files(workdir):
            if path != marker:
                keys.append(prefix + path.relative_to(workdir).as_posix())
                self._objects.upload_file(path, keys[-1], tag)
        if marker is not None and marker.is_file():
            keys.append(prefix + last)
            self._objects.upload_file(marker, keys[-1], tag)
        return keys

    def restore(self, job_id: str, slug: str, workdir: Path) -> int:
        """Download a record's work dir into `workdir`; returns how many files there were (0: none saved)."""
        return self._objects.download_prefix(work_prefix(job_id, slug), workdir)

    def record_failure(self, job_id: str, batch_job_id: str, report: dict[str, Any]) -> None:
        self._objects.put_json(failure_key(job_id, batch_job_id), report, {"Tagging": _tagging()})

    def failure(self, job_id: str, batch_job_id: str) -> dict[str, Any] | None:
        """What the Batch job recorded about its failure, if it could (a container killed outright cannot)."""
        report = self._objects.read_json(failure_key(job_id, batch_job_id))
        return report if isinstance(report, dict) else None


class S3MsaCache:
    """The MSA cache shared by every job through S3; entries have the layout of the pipeline's local cache."""

    def __init__(self, objects: S3Objects) -> None:
        self._objects = objects

    def manifest(self) -> list[dict[str, Any]] | None:
        """The databases (Database.to_dict() entries) the latest MSA job searched; None before any MSA job."""
        data = self._objects.read_json(MSA_MANIFEST_KEY)
        return data if isinstance(data, list) else None

    def publish_manifest(self, databases: list[dict[str, Any]]) -> None:
        self._objects.put_json(MSA_MANIFEST_KEY, databases)

    def has(self, key: str) -> bool:
        return self._objects.exists(msa_entry_prefix(key) + REPORT)

    def fetch(self, key: str, entry: Path) -> bool:
        """Download entry `key` into the local cache folder `entry`; False when S3 has no complete entry."""
        if not self.has(key):
            return False
        self._objects.download_prefix(msa_entry_prefix(key), entry)
        return True

    def store(self, key: str, entry: Path) -> None:
        """Upload the local cache folder `entry` as entry `key`, its report last so that readers never see half."""
        report = entry / REPORT
        if not report.is_file():
            raise FileNotFoundError(f"{entry} is not a complete MSA cache entry (no {REPORT})")
        prefix = msa_entry_prefix(key)
        for path in _files(entry):
            if path != report:
                self._objects.upload_file(path, prefix + path.relative_to(entry).as_posix())
        self._objects.upload_file(report, prefix + REPORT)
