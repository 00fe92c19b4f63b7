"""Sequence databases in AlphaFold's layout under one root, their identity, and the small demo database.

    db_root/uniref90/uniref90.fasta        jackhmmer (pyhmmer)
    db_root/mgnify/mgy_clusters*.fa        jackhmmer (pyhmmer)
    db_root/small_bfd/bfd-first_non_consensus_sequences.fasta   jackhmmer (pyhmmer)
    db_root/bfd/<prefix>_a3m.ffdata + db_root/uniref30/<prefix>_a3m.ffdata   HHblits, when the binary is present

A `VERSION` file beside each database says where it came from; its identity (version, size, mtime) keys the MSA cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from af2jobs import atomic
from af2jobs.errors import DatabaseError

JACKHMMER_DATABASES = ("uniref90", "mgnify", "small_bfd")
HHBLITS_DATABASES = ("bfd", "uniref30")
FASTA_SUFFIXES = (".fasta", ".fa", ".fasta.gz", ".fa.gz")
_META = ".af2db.json"


@dataclass(frozen=True)
class Database:
    name: str
    path: Path  # a FASTA file for jackhmmer; an ffindex prefix for HHblits
    tool: str  # "jackhmmer" | "hhblits"
    version: str
    size_bytes: int
    sequences: int | None

    @property
    def identity(self) -> str:
        """What makes two searches against this database interchangeable (the MSA cache key)."""
        return f"{self.name}:{self.version}:{self.size_bytes}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _fasta_in(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(FASTA_SUFFIXES))
    return files[0] if files else None


def _ffindex_prefix(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    data = sorted(directory.glob("*_a3m.ffdata"))
    return Path(str(data[0])[: -len("_a3m.ffdata")]) if data else None


def _count_sequences(path: Path) -> int:
    opener = gzip.open if path.name.endswith(".gz") else open
    n = 0
    with opener(path, "rb") as fh:
        for line in fh:
            if line.startswith(b">"):
                n += 1
    return n


def _describe(name: str, path: Path, tool: str, data_file: Path) -> Database:
    """Identity of one database; the sequence count is cached beside it since counting a real uniref90 takes minutes."""
    st = data_file.stat()
    version_file = data_file.parent / "VERSION"
    version = version_file.read_text().strip().splitlines()[0] if version_file.is_file() else f"{data_file.name}@{int(st.st_mtime)}"
    meta_path = data_file.parent / _META
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
    count = meta.get("sequences") if meta.get("size") == st.st_size and meta.get("mtime") == st.st_mtime else None
    if count is None and tool == "jackhmmer":
        count = _count_sequences(data_file)
        try:
            atomic.write_json(meta_path, {"size": st.st_size, "mtime": st.st_mtime, "sequences": count}, indent=None)
        except OSError:
            pass  # a read-only database is fine; we count again next time
    return Database(name, path, tool, version, st.st_size, count)


def discover(db_root: Path, hhblits_binary: str | None = None) -> list[Database]:
    """Every configured database under db_root, in AlphaFold's order. Missing ones are simply absent."""
    found: list[Database] = []
    for name in JACKHMMER_DATABASES:
        path = _fasta_in(db_root / name)
        if path is not None:
            found.append(_describe(name, path, "jackhmmer", path))
    hhblits = hhblits_binary or shutil.which("hhblits")
    prefixes = [_ffindex_prefix(db_root / name) for name in HHBLITS_DATABASES]
    if hhblits and all(prefixes):
        for name, prefix in zip(HHBLITS_DATABASES, prefixes):
            found.append(_describe(name, prefix, "hhblits", Path(f"{prefix}_a3m.ffdata")))
    return found


# --- the small demo database, fetched from Debian's package registry -----------------------------------------

@dataclass(frozen=True)
class DemoSource:
    database: str
    package: str
    member: str  # path inside the package
    target: str  # file name under db_root/<database>/
    description: str


DEMO_SOURCES = (
    DemoSource(
        "uniref90", "mmseqs2-examples", "usr/share/doc/mmseqs2/example-data/DB.fasta.gz", "uniref90.fasta",
        "20,000 UniProt sequences (MMseqs2 example database)",
    ),
    DemoSource(
        "small_bfd", "hmmer-examples", "usr/share/doc/hmmer/examples/tutorial/globins45.fa",
        "bfd-first_non_consensus_sequences.fasta", "45 globins (HMMER tutorial)",
    ),
)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DatabaseError(f"'{cmd[0]}' is not installed; the demo database comes from Debian packages") from exc


def _apt_download(package: str, workdir: Path) -> Path:
    result = _run(["apt-get", "download", package], workdir)
    if result.returncode != 0 and os.geteuid() == 0:
        # A fresh machine may have no package lists yet.
        _run(["apt-get", "update", "-qq"], workdir)
        result = _run(["apt-get", "download", package], workdir)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise DatabaseError(
            f"could not download Debian package '{package}': {result.stderr.strip() or result.stdout.strip()}"
            + ("" if os.geteuid() == 0 else " (run 'sudo apt-get update' once and try again)")
        )
    return debs[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_demo(db_root: Path, *, force: bool = False, log=print) -> list[Path]:
    """Install the demo databases under db_root. Already present ones are kept (a second run costs nothing)."""
    written = []
    for src in DEMO_SOURCES:
        target_dir = db_root / src.database
        target = target_dir / src.target
        if target.is_file() and (target_dir / "VERSION").is_file() and not force:
            log(f"{src.database}: present ({target})")
            continue
        with tempfile.TemporaryDirectory(prefix="af2db-") as tmp:
            work = Path(tmp)
            log(f"{src.database}: fetching Debian package {src.package}")
            deb = _apt_download(src.package, work)
            version = _run(["dpkg-deb", "-f", str(deb), "Version"], work).stdout.strip()
            extracted = work / "x"
            result = _run(["dpkg-deb", "-x", str(deb), str(extracted)], work)
            member = extracted / src.member
            if result.returncode != 0 or not member.is_file():
                raise DatabaseError(f"package {src.package} has no {src.member}: {result.stderr.strip()}")
            opener = gzip.open if member.name.endswith(".gz") else open
            with opener(member, "rb") as fin, atomic.replacing(target) as fout:
                shutil.copyfileobj(fin, fout)
            digest = _sha256(target)
            atomic.write_text(target_dir / "VERSION",
                              f"debian:{src.package}={version} sha256:{digest[:16]}\n{src.description}\n")
            written.append(target)
            log(f"{src.database}: {target} ({_count_sequences(target)} sequences)")
    return written
