"""The small real demo database, from Debian's package registry, in AlphaFold's layout (af2 db fetch-demo):

    uniref90/uniref90.fasta      20,000 UniProt sequences (the MMseqs2 example database, mmseqs2-examples)
    small_bfd/...fasta           the 45 globins of HMMER's tutorial (hmmer-examples)
    bfd/, uniref30/              tiny HH-suite databases made from the same globins (first half, second half) with
                                 HH-suite's own tools, so that db_preset full_dbs (HHblits) runs too

Each folder has its VERSION: where the data came from and its checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from af2jobs import atomic
from af2jobs.errors import DatabaseError
from af2jobs.pipeline import hhsuitedb
from af2jobs.pipeline.databases import count_sequences, read_fasta

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
    written = _fetch_packages(db_root, force=force, log=log)
    written += _build_hhsuite_demo(db_root, force=force, log=log)
    return written


def _fetch_packages(db_root: Path, *, force: bool, log) -> list[Path]:
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
            log(f"{src.database}: {target} ({count_sequences(target)} sequences)")
    return written


GLOBINS = "small_bfd/bfd-first_non_consensus_sequences.fasta"
# (database, ffindex prefix, which half of the globins)
HHSUITE_DEMO = (("bfd", "demo_bfd", 0), ("uniref30", "demo_uniref30", 1))


def _build_hhsuite_demo(db_root: Path, *, force: bool, log) -> list[Path]:
    """Tiny BFD and UniRef30 for HHblits: one single-sequence MSA per globin, built with HH-suite's tools."""
    globins = read_fasta(db_root / GLOBINS)
    written = []
    for name, stem, half in HHSUITE_DEMO:
        folder = db_root / name
        if (folder / "VERSION").is_file() and not force:
            log(f"{name}: present ({folder})")
            continue
        missing = hhsuitedb.missing_tools()
        if missing:
            log(f"{name}: not built: HH-suite is not installed ({', '.join(missing)}); db_preset full_dbs needs it "
                "(install the Debian package hhsuite, e.g. make tools, and run af2 db fetch-demo again)")
            continue
        part = globins[: len(globins) // 2] if half == 0 else globins[len(globins) // 2:]
        with atomic.staging_dir(folder) as staging:
            hhsuitedb.build(staging / stem, ((n, f">{n}\n{s}\n") for n, s in part))
            (staging / "VERSION").write_text(
                f"demo:{stem} {len(part)} globins sha256:{_sha256(db_root / GLOBINS)[:16]}\n"
                f"{len(part)} globins of HMMER's tutorial, one single-sequence MSA each, built with HH-suite\n")
        written.append(folder)
        log(f"{name}: {folder} ({len(part)} entries)")
    return written
