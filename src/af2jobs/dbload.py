"""Loads AlphaFold's sequence databases and parameters into the shared file system, then says how it went.

    python -m af2jobs.dbload --root /fsx/databases [--databases full|reduced|mmseqs|NAME,...] [--work /fsx/dbload]
                             [--topic-arn ARN] [--parallel 3] [--keep-downloads] [--list]

The `dbload` Batch job runs this once after a deploy (docs/operations.md). It writes the layout that
af2jobs.pipeline.databases and the params loader read:

    ROOT/params/params_model_{1..5}[_ptm].npz          ROOT/uniref90/uniref90.fasta
    ROOT/mgnify/mgy_clusters_2022_05.fa                ROOT/small_bfd/bfd-first_non_consensus_sequences.fasta
    ROOT/bfd/bfd_metaclust_..._{a3m,cs219,hhm}.ff*     ROOT/uniref30/UniRef30_2021_03_{a3m,cs219,hhm}.ff*
    ROOT/pdb70/pdb70_{a3m,cs219,hhm}.ff*               ROOT/pdb_seqres/pdb_seqres.txt
    ROOT/pdb_mmcif/mmcif_files/<id>.cif, ROOT/pdb_mmcif/obsolete.dat
    ROOT/mmseqs_uniref/uniref30_2302_db                ColabFold's UniRef30 and environmental databases
    ROOT/mmseqs_env/colabfold_envdb_202108_db          (msa_mode mmseqs2), made from its published TSVs as its
                                                       setup_databases.sh does (padded for the GPU, indexed)
    ROOT/<name>/VERSION   written last; its first line is the database's version (the MSA cache keys on it)

Per database: download into WORK/downloads (a partial file resumes with an HTTP Range request, and starts over
if the file changed on the server meanwhile), check it against the checksum its publisher gives (pinned here,
the server's MD5 or CRC32C header, or a metalink file), unpack into WORK/staging/<name>, then move that folder to
ROOT/<name> in one rename. A database whose VERSION names the same source is left alone, so after any failure the
job is simply run again and does only what is left. WORK lies outside ROOT so that half-written files are never
exported to the database bucket.

pdb_mmcif is no single file: it is mirrored with rsync from the PDB's rsync server into WORK/downloads/pdb_mmcif
(a second run transfers only what changed), as AlphaFold's download_pdb_mmcif.sh does, then unzipped into
WORK/staging/pdb_mmcif/mmcif_files beside the PDB's obsolete.dat and moved into place like the others.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import Any

from af2jobs import __version__, atomic
from af2jobs.errors import DatabaseError

CHUNK = 8 << 20
MMCIF_FILES = "mmcif_files"  # af2jobs.pipeline.databases.MMCIF_FILES (this module loads no pipeline)
USER_AGENT = f"af2jobs-dbload/{__version__}"
GB = 1e9


class DownloadError(DatabaseError):
    """The server refused the file, or the connection kept failing after every retry."""


class ChecksumError(DatabaseError):
    """The downloaded file differs from what its publisher says it is; it was deleted."""


# ---------------------------------------------------------------------------------------------------------------
# What to load (data, not code: a new release is a new entry)


@dataclass(frozen=True)
class Source:
    name: str  # folder under ROOT
    url: str
    # "gunzip" (one file, named `target`) | "tar" (members into the folder) | "none" | "mirror" (rsync) |
    # "colabfold" (a tar of ColabFold's TSVs `target`*.tsv, made into its MMseqs2 database: mmseqs.from_release)
    unpack: str
    version: str  # first line of VERSION
    target: str | None = None  # file name for "gunzip" / "none"
    checksum: str | None = None  # pinned "md5:<hex>" or "sha256:<hex>"; else the server's own (see _expected)
    checksum_url: str | None = None  # a metalink file holding the MD5 (UniProt publishes one per release)
    # "mirror": a file fetched beside the mirrored ones (the PDB's obsolete.dat); "gunzip": a second file, verified the
    # same way, whose records are appended to the first's (AlphaFold's uniprot.fasta: TrEMBL, then SwissProt)
    extra_url: str | None = None
    unpacked_gb: float = 0.0  # for the free-space check

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_GCS = "https://storage.googleapis.com"
_COLABFOLD = "https://wwwuser.gwdg.de/~compbiol/colabfold"
_UNIPROT = "https://ftp.ebi.ac.uk/pub/databases/uniprot/current_release/knowledgebase/complete"
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("params", f"{_GCS}/alphafold/alphafold_params_2022-12-06.tar", "tar", "alphafold_params_2022-12-06",
               unpacked_gb=5.3),
        Source("small_bfd", f"{_GCS}/alphafold-databases/reduced_dbs/bfd-first_non_consensus_sequences.fasta.gz",
               "gunzip", "bfd-first_non_consensus_sequences", target="bfd-first_non_consensus_sequences.fasta",
               unpacked_gb=17),
        Source("mgnify", f"{_GCS}/alphafold-databases/v2.3/mgy_clusters_2022_05.fa.gz", "gunzip",
               "mgy_clusters_2022_05", target="mgy_clusters_2022_05.fa", unpacked_gb=120),
        # UniRef90 changes every release at this address; its MD5 comes from the release's metalink file.
        Source("uniref90", "https://ftp.ebi.ac.uk/pub/databases/uniprot/uniref/uniref90/uniref90.fasta.gz",
               "gunzip", "uniref90", target="uniref90.fasta",
               checksum_url="https://ftp.ebi.ac.uk/pub/databases/uniprot/uniref/uniref90/RELEASE.metalink",
               unpacked_gb=90),
        Source("uniref30", f"{_GCS}/alphafold-databases/v2.3/UniRef30_2021_03.tar.gz", "tar", "UniRef30_2021_03",
               unpacked_gb=206),
        Source("bfd", f"{_GCS}/alphafold-databases/casp14_versions/"
               "bfd_metaclust_clu_complete_id30_c90_final_seq.sorted_opt.tar.gz", "tar",
               "bfd_metaclust_clu_complete_id30_c90_final_seq.sorted_opt", unpacked_gb=1800),
        # AlphaFold-Multimer's UniProt (download_uniprot.sh): TrEMBL and SwissProt in one FASTA; the release's
        # metalink holds both files' MD5.
        Source("uniprot", f"{_UNIPROT}/uniprot_trembl.fasta.gz", "gunzip", "uniprot", target="uniprot.fasta",
               extra_url=f"{_UNIPROT}/uniprot_sprot.fasta.gz", checksum_url=f"{_UNIPROT}/RELEASE.metalink",
               unpacked_gb=105),
        # Templates (AlphaFold 2.3's download_pdb70.sh, download_pdb_mmcif.sh, download_pdb_seqres.sh).
        Source("pdb70", "https://wwwuser.gwdg.de/~compbiol/data/hhsuite/databases/hhsuite_dbs/old-releases/"
               "pdb70_from_mmcif_200401.tar.gz", "tar", "pdb70_from_mmcif_200401", unpacked_gb=56),
        Source("pdb_mmcif", "rsync://rsync.rcsb.org:33444/ftp_data/structures/divided/mmCIF/", "mirror",
               "pdb_mmcif", extra_url="https://files.wwpdb.org/pub/pdb/data/status/obsolete.dat", unpacked_gb=240),
        # msa_mode mmseqs2: ColabFold's databases (its setup_databases.sh), from their TSVs. Sizes for the free-space
        # check: the archives' and what tsv2exprofiledb and createindex add, estimated, not measured here.
        Source("mmseqs_uniref", f"{_COLABFOLD}/uniref30_2302.tar.gz", "colabfold", "uniref30_2302",
               target="uniref30_2302", unpacked_gb=400),
        Source("mmseqs_env", f"{_COLABFOLD}/colabfold_envdb_202108.tar.gz", "colabfold", "colabfold_envdb_202108",
               target="colabfold_envdb_202108", unpacked_gb=1500),
        # Changes every week at this address, like UniRef90; VERSION's checksum tells one week's from another.
        Source("pdb_seqres", "https://files.wwpdb.org/pub/pdb/derived_data/pdb_seqres.txt", "none", "pdb_seqres",
               target="pdb_seqres.txt", unpacked_gb=0.3),
    )
}
TEMPLATES = ("pdb70", "pdb_mmcif", "pdb_seqres")
SETS: dict[str, tuple[str, ...]] = {
    # AlphaFold's reduced_dbs preset: jackhmmer on small BFD instead of HHblits on BFD + UniRef30.
    # Both with the template databases: models 1 and 2 were trained with templates.
    "reduced": ("params", "small_bfd", "mgnify", "uniref90", "uniprot", *TEMPLATES),
    "full": ("params", "small_bfd", "mgnify", "uniref90", "uniprot", "uniref30", "bfd", *TEMPLATES),
    # msa_mode mmseqs2: ColabFold's two databases and the templates (pdb70's HHsearch with the UniRef A3M).
    "mmseqs": ("params", *TEMPLATES, "mmseqs_uniref", "mmseqs_env"),
}


def resolve(selection: str) -> list[str]:
    """Database names for `full`, `reduced` or a comma-separated list of names."""
    if selection in SETS:
        return list(SETS[selection])
    names = [n.strip() for n in selection.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise ValueError(
            f"unknown database {', '.join(unknown) or '(none given)'}; choose {' or '.join(SETS)} or names "
            f"from {', '.join(SOURCES)}"
        )
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------------
# Checksums


@dataclass(frozen=True)
class Digest:
    algorithm: str  # "md5" | "sha256" | "crc32c"
    hex: str
    origin: str  # where the expected value came from: "pinned", "server", "metalink"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def _crc32c() -> Any | None:
    try:
        import google_crc32c  # the msa image installs it; a checksum of 272 GB needs C, not Python
    except ImportError:
        return None
    return google_crc32c


def parse_goog_hash(values: Sequence[str]) -> dict[str, str]:
    """{"md5": hex, "crc32c": hex} from x-goog-hash headers (one header per hash, or comma-separated)."""
    out = {}
    for value in values:
        for part in value.split(","):
            algorithm, sep, b64 = part.strip().partition("=")
            if not sep:
                continue
            try:
                out[algorithm.lower()] = base64.b64decode(b64 + "=" * (-len(b64) % 4)).hex()
            except (binascii.Error, ValueError):
                continue
    return out


def parse_metalink(text: str, filename: str) -> str | None:
    """The MD5 a metalink (v3 or v4) gives for `filename`, or None."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "file" and element.get("name") == filename:
            for child in element.iter():
                if child.tag.rsplit("}", 1)[-1] == "hash" and (child.get("type") or "").lower() == "md5":
                    return (child.text or "").strip().lower() or None
    return None


def file_digests(path: Path, algorithms: Sequence[str]) -> dict[str, str]:
    """Hex digests of a file, all in one read."""
    hashers: dict[str, Any] = {}
    for algorithm in algorithms:
        if algorithm == "crc32c":
            module = _crc32c()
            if module is None:
                raise ChecksumError("no crc32c implementation (pip install google-crc32c)")
            hashers[algorithm] = module.Checksum()
        else:
            hashers[algorithm] = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() if name != "crc32c" else hasher.digest().hex() for name, hasher in hashers.items()}


# ---------------------------------------------------------------------------------------------------------------
# Resumable download


@dataclass
class Remote:
    length: int | None
    validator: str | None  # ETag (strong) or Last-Modified: what If-Range sends
    digests: dict[str, str]  # the server's own: {"md5": hex, "crc32c": hex}


class Http:
    """The few HTTP calls the loader makes (tests point it at a local server)."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s

    def open(self, url: str, headers: Mapping[str, str] | None = None, method: str = "GET"):
        request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})})
        return urllib.request.urlopen(request, timeout=self.timeout_s)  # noqa: S310 - https URLs from SOURCES

    def head(self, url: str) -> Remote:
        try:
            with self.open(url, method="HEAD") as response:
                return _remote(response.headers)
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 405, 501):  # no HEAD here: the GET's headers will do
                return Remote(None, None, {})
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None

    def text(self, url: str) -> str:
        with self.open(url) as response:
            return response.read().decode("utf-8", "replace")


def _remote(headers: Any) -> Remote:
    length = headers.get("Content-Length")
    etag = headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    digests = parse_goog_hash(headers.get_all("x-goog-hash") or [])
    if "md5" not in digests and headers.get("Content-MD5"):
        digests.update(parse_goog_hash([f"md5={headers['Content-MD5']}"]))
    return Remote(int(length) if length and length.isdigit() else None, validator, digests)


@dataclass
class Progress:
    name: str
    log: Callable[[str], None]
    every_s: float = 30.0
    _last: float = field(default_factory=time.monotonic)

    def __call__(self, done: int, total: int | None, rate: float) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        of = f" / {total / GB:.1f} GB ({100 * done / total:.0f}%)" if total else " GB"
        self.log(f"{self.name}: {done / GB:.1f}{of}, {rate / 1e6:.0f} MB/s")


def download(
    url: str,
    dest: Path,
    *,
    http: Http,
    retries: int = 8,
    backoff_s: float = 2.0,
    progress: Callable[[int, int | None, float], None] | None = None,
    log: Callable[[str], None] = print,
) -> Remote:
    """Download url to dest, resuming dest.part when it holds the start of the same file. Returns what the server
    said about the file. dest appears only once complete; checking it is the caller's business."""
    part = dest.with_name(dest.name + ".part")
    state_path = dest.with_name(dest.name + ".part.json")
    remote = http.head(url)
    state = _read_json(state_path)
    if part.exists() and not (
        state.get("url") == url and state.get("validator") == remote.validator and remote.validator is not None
    ):
        log(f"{dest.name}: the partial download is of another version; starting over")
        part.unlink()
    atomic.write_json(state_path, {"url": url, "validator": remote.validator, "length": remote.length}, indent=None)

    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if remote.length is not None and offset == remote.length:
            break
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if remote.validator:
                headers["If-Range"] = remote.validator
        try:
            finished = _transfer(http, url, headers, part, offset, remote, progress)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset and remote.length is None:
                break  # nothing after what we have: it was complete
            if exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            finished, error = False, f"HTTP {exc.code}"
        except (OSError, HTTPException) as exc:  # URLError, resets, timeouts, IncompleteRead
            finished, error = False, f"{type(exc).__name__}: {exc}"
        if finished:
            break
        attempt += 1
        if attempt > retries:
            raise DownloadError(f"{url}: gave up after {retries} retries ({error})")
        wait = min(backoff_s * 2 ** (attempt - 1), 60.0)
        log(f"{dest.name}: {error}; resuming in {wait:.0f} s (retry {attempt} of {retries})")
        time.sleep(wait)

    size = part.stat().st_size
    if remote.length is not None and size != remote.length:
        part.unlink()
        raise DownloadError(f"{url}: got {size} bytes, the server announced {remote.length}")
    atomic.commit(part, dest)
    state_path.unlink(missing_ok=True)
    return remote


def _transfer(http: Http, url: str, headers: dict, part: Path, offset: int, remote: Remote, progress) -> bool:
    """One GET, appended to part. True when the response ended where the file ends."""
    with http.open(url, headers) as response:
        status = response.status
        if status == 200:
            offset = 0  # the whole file (server ignored the range, or the file changed: If-Range)
        elif status != 206 or not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
            raise DownloadError(f"{url}: unexpected answer {status} {response.headers.get('Content-Range')!r}")
        got = _remote(response.headers)
        if status == 200:
            # A full answer describes the file as it is now; prefer it over what HEAD said.
            remote.length = got.length if got.length is not None else remote.length
            remote.validator = got.validator or remote.validator
            remote.digests = got.digests or remote.digests
        expected_end = remote.length
        started, done = time.monotonic(), offset
        with open(part, "r+b" if part.exists() else "wb") as out:
            out.truncate(offset)
            out.seek(offset)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, expected_end, (done - offset) / max(time.monotonic() - started, 1e-6))
        if expected_end is None:
            return True  # no length to compare with: the server closed the response normally
        if done < expected_end:
            raise IncompleteRead(b"", expected_end - done)  # the connection closed early: resume
        return True


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------------------------
# Verify, unpack, install


def expected_digest(source: Source, remote: Remote, http: Http) -> Digest | None:
    """The checksum to hold the download to: pinned, else the server's MD5 or CRC32C, else the metalink's MD5."""
    if source.checksum:
        algorithm, _, value = source.checksum.partition(":")
        return Digest(algorithm, value.lower(), "pinned")
    if "md5" in remote.digests:
        return Digest("md5", remote.digests["md5"], "server")
    if source.checksum_url:
        md5 = parse_metalink(http.text(source.checksum_url), source.filename)
        if md5:
            return Digest("md5", md5, "metalink")
    if "crc32c" in remote.digests:
        return Digest("crc32c", remote.digests["crc32c"], "server")
    return None


def verify(path: Path, expected: Digest | None) -> tuple[str, str]:
    """(sha256 of the file, how it was verified). Raises ChecksumError, deleting the file, on a mismatch."""
    algorithms = ["sha256"] + ([expected.algorithm] if expected and expected.algorithm != "sha256" else [])
    digests = file_digests(path, algorithms)
    if expected is None:
        return digests["sha256"], "size only (the publisher gives no checksum)"
    if digests[expected.algorithm] != expected.hex:
        path.unlink()
        raise ChecksumError(
            f"{path.name}: {expected.algorithm} is {digests[expected.algorithm]}, the {expected.origin} says "
            f"{expected.hex}; the file was deleted and is downloaded again on the next run"
        )
    return digests["sha256"], f"{expected} ({expected.origin})"


_MMSEQS_BUILD = threading.Lock()


def unpack(source: Source, archive: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier unpack
    folder.mkdir(parents=True)
    if source.unpack == "gunzip":
        with gzip.open(archive, "rb") as fin, open(folder / source.target, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
    elif source.unpack == "tar":
        with tarfile.open(archive, "r:*") as tar:
            # filter="data": no absolute paths, no '..', no links leaving the folder, no devices.
            tar.extractall(folder, filter="data")
        _flatten(folder)
    elif source.unpack == "colabfold":
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(folder, filter="data")
        _flatten(folder)
        from af2jobs.pipeline import mmseqs

        with _MMSEQS_BUILD:  # one at a time: each takes every CPU and 70 % of the memory
            mmseqs.from_release(folder, source.target, cpus=len(os.sched_getaffinity(0)),
                                split_memory=_index_memory())
    elif source.unpack == "none":
        shutil.copyfile(archive, folder / (source.target or source.filename))
    else:
        raise ValueError(f"{source.name}: unknown unpack {source.unpack!r}")


def _flatten(folder: Path) -> None:
    """An archive holding one top folder (UniRef30_2021_03/...) puts its files straight into `folder`."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        inner = entries[0]
        for child in inner.iterdir():
            os.rename(child, folder / child.name)
        inner.rmdir()


def install(staged: Path, target: Path) -> None:
    """Replace target by staged (a rename on one file system; a copy if WORK and ROOT differ)."""
    atomic.replace_dir(staged, target)


def read_version(folder: Path) -> dict[str, str]:
    """The fields of ROOT/<name>/VERSION ('key: value' lines after the first)."""
    try:
        lines = (folder / "VERSION").read_text().splitlines()
    except OSError:
        return {}
    fields = {"version": lines[0].strip()} if lines else {}
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def version_text(source: Source, sha256: str, verified: str) -> str:
    return "\n".join([
        f"{source.version} sha256:{sha256[:16]}",
        f"source: {source.url}",
        f"sha256: {sha256}",
        f"verified: {verified}",
        f"loaded: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"loader: {USER_AGENT}",
        "",
    ])


# ---------------------------------------------------------------------------------------------------------------
# One database, then all of them


@dataclass
class Outcome:
    name: str
    status: str  # "present" | "loaded" | "failed"
    detail: str = ""
    seconds: float = 0.0
    bytes_on_disk: int = 0

    def line(self) -> str:
        size = f", {self.bytes_on_disk / GB:.1f} GB" if self.bytes_on_disk else ""
        return f"{self.name}: {self.status}{size}, {self.seconds:.0f} s. {self.detail}".rstrip()


@dataclass
class Loader:
    root: Path
    work: Path
    http: Http = field(default_factory=Http)
    keep_downloads: bool = False
    log: Callable[[str], None] = print
    retries: int = 8
    backoff_s: float = 2.0

    def load(self, source: Source) -> Outcome:
        started = time.monotonic()
        target = self.root / source.name
        present = read_version(target)
        if present.get("source") == source.url:
            self.log(f"{source.name}: present ({present.get('version')}), skipped")
            return Outcome(source.name, "present", present.get("version", ""), time.monotonic() - started)
        try:
            detail = self._load(source, target)
        except (DatabaseError, OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
            self.log(f"{source.name}: FAILED: {exc}")
            return Outcome(source.name, "failed", f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        return Outcome(source.name, "loaded", detail, time.monotonic() - started, _size(target))

    def _load(self, source: Source, target: Path) -> str:
        if source.unpack == "mirror":
            return self._mirror(source, target)
        archive, sha256, verified = self._fetch(source)
        parts = [(archive, verified)]
        if source.extra_url:  # "gunzip": a second file whose records follow the first's (UniProt: TrEMBL + SwissProt)
            parts.append(self._fetch(dataclasses.replace(source, url=source.extra_url, extra_url=None))[::2])
        staged = self.work / "staging" / source.name
        self.log(f"{source.name}: unpacking ({source.unpack})")
        unpack(source, archive, staged)
        if source.extra_url:
            with gzip.open(parts[1][0], "rb") as fin, open(staged / source.target, "ab") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
            verified = "; ".join(f"{path.name}: {how}" for path, how in parts)
        (staged / "VERSION").write_text(version_text(source, sha256, verified))
        install(staged, target)
        if not self.keep_downloads:
            for path, _ in parts:
                path.unlink()
                _checked(path).unlink(missing_ok=True)
        self.log(f"{source.name}: loaded into {target} (verified: {verified})")
        return f"{source.version}; verified {verified}"

    def _fetch(self, source: Source) -> tuple[Path, str, str]:
        """The source's file in WORK/downloads, verified (a verified earlier download is kept): its path, its
        sha256 and how it was verified."""
        downloads = self.work / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        archive = downloads / source.filename
        record = _read_json(_checked(archive))
        if archive.exists() and record.get("sha256"):
            self.log(f"{source.name}: {archive.name} already downloaded and verified")
            sha256, verified = record["sha256"], record["verified"]
        else:
            if not archive.exists():
                self._check_space(source, archive)
                self.log(f"{source.name}: downloading {source.url}")
                remote = download(source.url, archive, http=self.http, retries=self.retries,
                                  backoff_s=self.backoff_s, progress=Progress(source.name, self.log), log=self.log)
            else:  # downloaded, but the run ended before the check was recorded
                remote = self.http.head(source.url)
            expected = expected_digest(source, remote, self.http)
            self.log(f"{source.name}: verifying {archive.stat().st_size / GB:.1f} GB against "
                     f"{expected or 'nothing (no checksum published)'}")
            sha256, verified = verify(archive, expected)
            atomic.write_json(_checked(archive), {"sha256": sha256, "verified": verified}, indent=None)
        return archive, sha256, verified

    def _mirror(self, source: Source, target: Path) -> str:
        """rsync the source's tree (gzipped mmCIF files in two-letter folders) into WORK/downloads/<name>, unzip it
        flat into WORK/staging/<name>/mmcif_files with the extra file beside it, and move that into place."""
        rsync = shutil.which("rsync")
        if rsync is None:
            raise DatabaseError(f"{source.name}: rsync is not installed; {source.name} is mirrored with rsync")
        raw = self.work / "downloads" / source.name
        raw.mkdir(parents=True, exist_ok=True)
        self.log(f"{source.name}: mirroring {source.url}")
        command = [rsync, "--recursive", "--links", "--perms", "--times", "--compress", "--delete", "--timeout=600",
                   source.url, f"{raw}/"]
        for attempt in range(1, self.retries + 1):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode == 0:
                break
            self.log(f"{source.name}: rsync exited {done.returncode} (attempt {attempt}/{self.retries}): "
                     f"{done.stderr.strip()[-300:]}")
            if attempt == self.retries:
                raise DownloadError(f"{source.name}: rsync of {source.url} failed: {done.stderr.strip()[-300:]}")
            time.sleep(self.backoff_s * attempt)
        staged = self.work / "staging" / source.name
        if staged.exists():
            shutil.rmtree(staged)
        files = staged / MMCIF_FILES
        files.mkdir(parents=True)
        count = 0
        for gz in sorted(raw.rglob("*.cif.gz")):
            with gzip.open(gz, "rb") as fin, open(files / gz.name.removesuffix(".gz"), "wb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
            count += 1
        if count == 0:
            raise DatabaseError(f"{source.name}: {source.url} holds no *.cif.gz files")
        if source.extra_url:
            extra = raw.parent / f"{source.name}-{source.extra_url.rsplit('/', 1)[-1]}"
            extra.unlink(missing_ok=True)  # it changes with each PDB release: always the current one
            download(source.extra_url, extra, http=self.http, retries=self.retries, backoff_s=self.backoff_s,
                     log=self.log)
            shutil.copyfile(extra, staged / source.extra_url.rsplit("/", 1)[-1])
        today = datetime.now(timezone.utc).date().isoformat()
        (staged / "VERSION").write_text("\n".join([
            f"{source.version}@{today} {count} entries", f"source: {source.url}",
            f"extra: {source.extra_url or '-'}", "verified: rsync (checksums in transfer)",
            f"loaded: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", f"loader: {USER_AGENT}", ""]))
        install(staged, target)
        self.log(f"{source.name}: {count} entries loaded into {target}")
        return f"{source.version}@{today}; {count} entries"

    def _check_space(self, source: Source, archive: Path) -> None:
        part = archive.with_name(archive.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        try:
            length = self.http.head(source.url).length
        except (OSError, HTTPException):
            return  # the download itself will report the network problem
        if length is None:
            return
        free = shutil.disk_usage(self.work).free
        if free < length - have:
            raise DatabaseError(
                f"{source.name}: {(length - have) / GB:.0f} GB left to download but only {free / GB:.0f} GB free "
                f"under {self.work}; grow the file system (FileSystemStorageGiB) and run the load again"
            )
        if free < length - have + source.unpacked_gb * GB:
            self.log(f"{source.name}: WARNING: {free / GB:.0f} GB free, about {source.unpacked_gb:.0f} GB more "
                     "needed unpacked (less with the file system's LZ4 compression)")


def _index_memory() -> str:
    """MMseqs2 createindex's --split-memory-limit: 70 % of the memory this job may use (its cgroup's limit, else
    the machine's), so a large database's index is built in parts that fit."""
    limit = None
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        limit = int(text) if text.isdigit() else None
    except OSError:
        pass
    if limit is None:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(1, int(limit * 0.7) >> 20)}M"


def _checked(archive: Path) -> Path:
    return archive.with_name(archive.name + ".verified.json")


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def load_all(loader: Loader, sources: Sequence[Source], parallel: int = 3) -> list[Outcome]:
    """Every source, `parallel` at a time, in the given order; one failure does not stop the others."""
    loader.root.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    base_log = loader.log

    def locked_log(message: str) -> None:
        with lock:
            base_log(message)

    loader.log = locked_log
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            return list(pool.map(loader.load, sources))
    finally:
        loader.log = base_log


def summary(outcomes: Sequence[Outcome], root: Path, seconds: float) -> tuple[str, str]:
    """(subject, message) of the notification."""
    failed = [o for o in outcomes if o.status == "failed"]
    counts = ", ".join(f"{sum(o.status == s for o in outcomes)} {s}" for s in ("loaded", "present", "failed"))
    subject = f"af2jobs databases: {'FAILED' if failed else 'ready'} ({counts})"
    lines = [f"Database load into {root} {'failed' if failed else 'finished'} after {seconds / 60:.0f} min.", ""]
    lines += [o.line() for o in outcomes]
    if failed:
        lines += ["", "Submit the dbload job again: it resumes and redoes only what failed."]
    return subject[:99], "\n".join(lines)


def sns_notifier(topic_arn: str) -> Callable[[str, str], None]:
    import boto3

    client = boto3.client("sns")

    def publish(subject: str, message: str) -> None:
        client.publish(TopicArn=topic_arn, Subject=subject, Message=message,
                       MessageAttributes={"event": {"DataType": "String", "StringValue": "dbload"}})

    return publish


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m af2jobs.dbload", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="database root (AF2_DB_ROOT), e.g. /fsx/databases")
    p.add_argument("--work", type=Path, help="downloads and staging, outside ROOT (default: ROOT/../dbload)")
    p.add_argument("--databases", default="full", help="full, reduced, mmseqs, or names: " + ",".join(SOURCES))
    p.add_argument("--parallel", type=int, default=3, help="databases loaded at once (default 3)")
    p.add_argument("--keep-downloads", action="store_true", help="keep the archives after unpacking")
    p.add_argument("--topic-arn", default=os.environ.get("AF2_TOPIC_ARN") or None,
                   help="SNS topic told the outcome (default: $AF2_TOPIC_ARN)")
    p.add_argument("--list", action="store_true", help="print what would be loaded and what is present, then stop")
    return p


def main(argv: Sequence[str] | None = None, *, http: Http | None = None,
         notify: Callable[[str, str], None] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        names = resolve(args.databases)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = args.root.resolve()
    work = (args.work or root.parent / "dbload").resolve()
    if work == root or root in work.parents:
        print(f"error: --work {work} must lie outside --root {root}", file=sys.stderr)
        return 2
    sources = [SOURCES[n] for n in names]
    if args.list:
        for s in sources:
            print(f"{s.name:10} {read_version(root / s.name).get('version', '(not loaded)'):50} {s.url}")
        return 0
    if notify is None and args.topic_arn:
        notify = sns_notifier(args.topic_arn)
    loader = Loader(root, work, http=http or Http(), keep_downloads=args.keep_downloads,
                    log=lambda m: print(m, flush=True))
    started = time.monotonic()
    outcomes = load_all(loader, sources, args.parallel)
    subject, message = summary(outcomes, root, time.monotonic() - started)
    print(message, flush=True)
    if notify is not None:
        notify(subject, message)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
