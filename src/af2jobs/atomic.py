"""Files and folders written so that a reader sees the old content or the new, never part of either: the one
write-to-a-temporary-then-rename of the code base.

    with replacing(path) as fh      a file: written to a temporary sibling (TMP_PREFIX, same folder, so the rename
                                    stays on one file system), flushed and fsynced, renamed over `path`; the
                                    temporary is removed if the block raises
    write_bytes/write_text/write_json   the same for data in memory
    with staging_dir(path) as tmp   a folder: built in a temporary sibling, then renamed into place. replace=True
                                    swaps out a folder already there (it is removed once the new one is in place);
                                    replace=False keeps it (another writer's equal result wins) and drops ours
    replace_dir(src, dest)          the swap alone, for a folder staged elsewhere (a copy when src is on another
                                    file system)
    commit(part, dest)              a file written over several attempts (a resumable download): fsync, rename
    create_once(path, data)         a file made whole by the first writer only (a hard link, which fails if `path`
                                    exists); every caller gets what that writer wrote. Readable by its owner only
                                    (it holds secrets)

Files and folders get the modes that open() and mkdir() would give them under the process's umask (0644 and 0755
under 022), as the rest of a result folder has: mkstemp and mkdtemp make them private (0600, 0700), which would
leave a result half readable. Only create_once keeps 0600.

Names starting with TMP_PREFIX are in-flight writes: the directory store never lists them, and store keys may not
use the prefix (af2jobs.layout.check_key).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"


def _read_umask() -> int:
    """The process's umask, without changing it (os.umask sets while it reads, which races other threads): from
    /proc where the kernel says it, else read and put back once, at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What open() gives a new file: 0666 under the umask (read at each call: a server may change its umask)."""
    return 0o666 & ~_read_umask()


def dir_mode() -> int:
    return 0o777 & ~_read_umask()


@contextmanager
def replacing(path: str | os.PathLike[str], mode: str = "wb", *, private: bool = False) -> Iterator[IO[Any]]:
    """An open temporary file that becomes `path` when the block ends without an exception; readable by its owner
    only with private=True (what holds keys or key-less links), else as the umask says."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else file_mode())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> None:
    with replacing(path, private=private) as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str, *, private: bool = False) -> None:
    with replacing(path, "w", private=private) as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, private: bool = False) -> None:
    """JSON with a final newline (indented unless indent=None)."""
    write_text(path, json.dumps(data, indent=indent) + "\n", private=private)


def commit(part: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Make a file that was written in pieces (and is kept between attempts) durable, then give it its name."""
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)


def create_once(path: str | os.PathLike[str], data: bytes) -> bytes:
    """`path`'s content, writing `data` there first if no file is there yet (mode 0600, as mkstemp makes it)."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another writer was first: theirs is the file
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path.read_bytes()


def replace_dir(src: Path, dest: Path) -> None:
    """Put folder `src` at `dest`, replacing what is there: the old folder is renamed aside first and removed once
    the new one is in place, so `dest` is always a whole folder. Across file systems `src` is copied next to
    `dest` before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f"{TMP_PREFIX}old-{dest.name}-{uuid.uuid4().hex[:8]}") if dest.exists() else None
    if old is not None:
        os.replace(dest, old)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            if old is not None:
                os.replace(old, dest)
            raise
        near = dest.with_name(f"{TMP_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}")
        shutil.copytree(src, near, symlinks=True)
        os.replace(near, dest)
        shutil.rmtree(src, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staging_dir(path: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling folder that becomes `path` when the block ends without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent))
    try:
        tmp.chmod(dir_mode())
        yield tmp
        if replace:
            replace_dir(tmp, path)
        else:
            try:
                os.rename(tmp, path)
            except OSError:
                pass  # the folder appeared meanwhile (another writer of the same result): keep theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["TMP_PREFIX", "commit", "create_once", "replace_dir", "replacing", "staging_dir", "write_bytes", "write_json",
           "write_text"]
