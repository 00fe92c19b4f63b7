"""The local ArtifactStore: a directory laid out like the S3 bucket (`input/...`, `jobs/<job_id>/...`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from af2jobs import atomic, errors
from af2jobs.layout import check_key

_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")


class DirectoryArtifactStore:
    """ArtifactStore on a local directory. Writes are atomic (temp file + os.replace); keys that would leave the
    root, also through a symlink, are refused."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()

    def _path(self, key: str, *, prefix: bool = False) -> Path:
        check_key(key, prefix=prefix)
        path = self.root.joinpath(*[p for p in key.split("/") if p])
        # resolve() follows symlinks in the parts that exist; a link pointing outside the root is caught here.
        if not path.resolve().is_relative_to(self.root):
            raise errors.ValidationError(f"store key {key!r} resolves outside the store", field="key")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        with atomic.replacing(self._writable(key)) as out:
            out.write(data)

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src, atomic.replacing(self._writable(key)) as out:
            shutil.copyfileobj(src, out)

    def _writable(self, key: str) -> Path:
        """The path of `key`, its folders made; readers see the old object or the new one, never a partial file."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Re-check once the directories exist: a symlinked directory may have been in the way.
        if not path.parent.resolve().is_relative_to(self.root):
            raise errors.ValidationError(f"{path} resolves outside the store", field="key")
        return path

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise errors.NotFoundError(f"no object {key}", field="key") from None

    def list(self, prefix: str) -> list[str]:
        # S3 semantics: a plain string prefix ("jobs/ab" matches "jobs/abc/x"); walk the deepest directory that
        # the prefix names, then filter.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_key, prefix=True) if base_key else self.root
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):  # does not follow directory symlinks
            for name in filenames:
                if name.startswith(atomic.TMP_PREFIX):
                    continue
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix) and full.resolve().is_relative_to(self.root):
                    keys.append(key)
        return sorted(keys)

    def delete_prefix(self, job_id: str) -> int:
        if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
            raise errors.ValidationError(f"job id {job_id!r} is not a plain identifier", field="job_id")
        # A directory, not a string prefix: job "ab" must not take job "abc" with it.
        job_dir = self.root / "jobs" / job_id
        if job_dir.is_symlink():
            # Remove the link itself; never what it points to.
            job_dir.unlink()
            return 0
        if not job_dir.is_dir():
            return 0
        count = sum(len(files) for _, _, files in os.walk(job_dir))
        shutil.rmtree(job_dir)
        return count

    def upload_url(self, key: str, expires_s: int = 3600) -> str | None:
        """None: the local server takes uploads itself (PUT /uploads)."""
        check_key(key)
        return None

    def url(self, key: str, expires_s: int = 3600) -> str:
        """A file:// URI; local files do not expire, so expires_s is accepted for the port's sake only."""
        path = self._path(key)
        if not path.is_file():
            raise errors.NotFoundError(f"no object {key}", field="key")
        return path.as_uri()
