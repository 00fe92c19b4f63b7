"""Artifacts in S3: the AWS ArtifactStore (same key rules as DirectoryArtifactStore), with presigned URLs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from af2jobs import errors

# The same key rules as the local store: a key valid here is valid there and means the same object.
from af2jobs.layout import TOP_LEVELS, check_key, job_prefix

# DeleteObjects takes at most 1000 keys per request.
DELETE_BATCH = 1000
# SigV4 presigned URLs live at most 7 days. Signed with temporary credentials (a Lambda role), a URL stops
# working when those credentials expire, which may be sooner.
MAX_URL_SECONDS = 7 * 24 * 3600
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _is_missing(exc: ClientError) -> bool:
    # GetObject says NoSuchKey; HeadObject has no body and says only 404.
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def s3_client(region: str | None = None) -> Any:
    """An S3 client whose presigned URLs work for a bucket of any age in any region: s3v4 signing (every region
    takes it, KMS-encrypted objects need it) for the bucket's region (`region`, else the one boto3 resolves:
    AWS_REGION in Lambda and Batch, where the stack's bucket is), at that region's endpoint with the bucket in the
    host name. A URL for the global endpoint is redirected to the region (which breaks its signature) while a new
    bucket's name spreads, and is never served for a bucket in an opt-in region."""
    config = Config(signature_version="s3v4",
                    s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"})
    return boto3.client("s3", region_name=region, config=config)


class S3ArtifactStore:
    """ArtifactStore on one bucket. Keys are checked before any request, so a bad key never reaches S3."""

    def __init__(self, bucket: str, client: Any = None, region: str | None = None) -> None:
        self.bucket = bucket
        self._client = client if client is not None else s3_client(region)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        # upload_file goes multipart for large files (structures, feature pickles); S3 shows the object only
        # once the upload completes, so a failed upload leaves the previous object in place.
        check_key(key)
        if not Path(path).is_file():
            raise FileNotFoundError(f"no file {path} to upload")
        self._client.upload_file(str(path), self.bucket, key)

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _is_missing(exc):
                raise errors.NotFoundError(f"no object {key}", field="key") from None
            raise
        return response["Body"].read()

    def list(self, prefix: str) -> list[str]:
        # As locally, the directory part of the prefix must be a valid key prefix; the rest is a plain string.
        if "/" in prefix:
            check_key(prefix.rsplit("/", 1)[0], prefix=True)
        # Only the store's own top levels: the bucket may also hold other things (e.g. an MSA cache).
        return sorted(k for k in self._keys(prefix) if k.split("/", 1)[0] in TOP_LEVELS)

    def _keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def delete_prefix(self, job_id: str) -> int:
        if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
            raise errors.ValidationError(f"job id {job_id!r} is not a plain identifier", field="job_id")
        # The trailing '/' makes this the job's folder, not a string prefix: job "ab" must not take "abc" along.
        keys = self._keys(job_prefix(job_id))
        for start in range(0, len(keys), DELETE_BATCH):
            self._delete_batch(job_id, keys[start : start + DELETE_BATCH])
        return len(keys)

    def _delete_batch(self, job_id: str, keys: list[str]) -> None:
        response = self._client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        # DeleteObjects answers 200 even when some keys failed; those are listed under Errors.
        failed = response.get("Errors", [])
        if failed:
            first = failed[0]
            raise errors.Af2JobsError(
                f"could not delete {len(failed)} objects of job {job_id}, e.g. {first.get('Key')}: "
                f"{first.get('Code')} {first.get('Message')}"
            )

    def upload_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A presigned PUT URL for `key` valid for `expires_s` seconds (1 s to 7 days)."""
        check_key(key)
        if not 1 <= expires_s <= MAX_URL_SECONDS:
            raise errors.ValidationError(f"expires_s must be from 1 to {MAX_URL_SECONDS}", field="expires_s")
        return self._client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )

    def url(self, key: str, expires_s: int = 3600) -> str:
        """A presigned GET URL valid for `expires_s` seconds (1 s to 7 days); NotFoundError if no such object."""
        check_key(key)
        if not 1 <= expires_s <= MAX_URL_SECONDS:
            raise errors.ValidationError(f"expires_s must be from 1 to {MAX_URL_SECONDS}", field="expires_s")
        try:
            # Signing needs no request; the check is there so that a link never points at nothing.
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise errors.NotFoundError(f"no object {key}", field="key") from None
            raise
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )
