"""The Batch stages' side of the MSA cache shared through S3 (af2jobs.adapters.aws.workarea.S3MsaCache). Before a
record's search its entry, if S3 has one, is put where the pipeline's local cache looks; after a search the new
entry goes to S3, with the identity of the databases searched (the manifest): Validate runs outside the VPC,
cannot see the databases, and keys cached MSAs by the manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from af2jobs import atomic
from af2jobs.fasta import FastaRecord
from af2jobs.settings import Settings

log = logging.getLogger(__name__)

# The pipeline's local MSA cache is settings.cache_dir/msa/<key[:2]>/<key> (af2jobs.pipeline.run.msa_stage and
# pipeline.msa.run_msa), with report.json written last: an S3 entry is fetched into that place.
MSA_CACHE_REPORT = "report.json"


class SharedMsaCache(Protocol):
    def has(self, key: str) -> bool: ...

    def fetch(self, key: str, entry: Path) -> bool: ...

    def store(self, key: str, entry: Path) -> None: ...

    def publish_manifest(self, databases: list[dict[str, Any]]) -> None: ...


class MsaCacheBridge:
    """Between the pipeline's local MSA cache (on the shared file system) and the S3 one."""

    def __init__(self, settings: Settings, shared: SharedMsaCache, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.shared = shared
        self.say = say  # a line in the job's log

    def _local_entry(self, key: str) -> Path:
        return self.settings.cache_dir / "msa" / key[:2] / key

    def fetch(self, record: FastaRecord, databases: list[Any], db_preset: str, msa_mode: str = "jackhmmer") -> None:
        """Put the S3 cache's entry for the record where the pipeline's local cache looks, if S3 has one."""
        from af2jobs.errors import DatabaseError
        from af2jobs.pipeline.msa import record_keys

        if not self.settings.msa_cache:
            return
        try:
            keys = record_keys(record, databases, db_preset, msa_mode)  # one per distinct chain of a complex
        except DatabaseError:
            return  # the preset's databases are missing: the MSA stage says so
        for key in keys:
            self._fetch_one(record, key)

    def _fetch_one(self, record: FastaRecord, key: str) -> None:
        entry = self._local_entry(key)
        if (entry / MSA_CACHE_REPORT).is_file() or not self.shared.has(key):
            return
        # Fetched beside the entry and renamed into place: other jobs read this cache (on the shared file system),
        # and one that put the same entry in place first keeps theirs, as good as ours.
        try:
            with atomic.staging_dir(entry, replace=False) as staging:
                self.shared.fetch(key, staging)
        except OSError as exc:
            log.warning("%s: the shared cache's MSA could not be fetched (%s); it is searched instead", record.name, exc)
            return
        self.say(f"{record.name}: MSA fetched from the shared cache")

    def share(self, timings: dict[str, Any], databases: list[Any]) -> None:
        """The record's MSA into the S3 cache, and the databases installed (each preset searches some of them) as
        the cache's manifest. Best effort: the MSA is done either way."""
        msa = timings["msa"]
        # A complex has an entry per distinct chain; a monomer's MSA is its one entry.
        entries = [e for e in msa.get("entries", [msa]) if e["cache"] in ("hit", "miss")]  # not off, not supplied
        if not entries:
            return
        try:
            for e in entries:
                entry = self._local_entry(e["cache_key"])
                if (entry / MSA_CACHE_REPORT).is_file() and not self.shared.has(e["cache_key"]):
                    self.shared.store(e["cache_key"], entry)
            self.shared.publish_manifest([db.to_dict() for db in databases])
        except (ClientError, OSError) as exc:
            log.warning("could not share the MSA through the S3 cache: %s", exc)


__all__ = ["MSA_CACHE_REPORT", "MsaCacheBridge", "SharedMsaCache"]
