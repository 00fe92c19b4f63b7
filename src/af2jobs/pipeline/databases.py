"""Sequence and template databases in AlphaFold's layout under one root, their identity, and what each db_preset
searches (the template search with it, when pdb70 and pdb_mmcif are installed).

    db_root/uniref90/uniref90.fasta        jackhmmer (pyhmmer)
    db_root/mgnify/mgy_clusters*.fa        jackhmmer (pyhmmer)
    db_root/small_bfd/bfd-first_non_consensus_sequences.fasta   jackhmmer (pyhmmer)
    db_root/bfd/<prefix>_a3m.ffdata + db_root/uniref30/<prefix>_a3m.ffdata   HHblits, when the binary is present
    db_root/pdb70/pdb70_{a3m,hhm,cs219}.ff*                 HHsearch of the UniRef90 MSA (templates)
    db_root/pdb_mmcif/mmcif_files/*.cif, pdb_mmcif/obsolete.dat   the templates' structures
    db_root/pdb_seqres/pdb_seqres.txt                        hmmsearch (AlphaFold-Multimer's templates)
    db_root/uniprot/uniprot.fasta                            jackhmmer (AlphaFold-Multimer: its species pair rows)
    db_root/mmseqs_uniref/<name>, db_root/mmseqs_env/<name>  MMseqs2 databases (msa_mode mmseqs2; pipeline.mmseqs)

A `VERSION` file beside each database says where it came from; its identity (version, size, mtime) keys the MSA cache.
The small demo database is af2jobs.pipeline.demo's.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from af2jobs import atomic
from af2jobs.errors import DatabaseError

JACKHMMER_DATABASES = ("uniref90", "mgnify", "small_bfd", "uniprot")
HHBLITS_DATABASES = ("bfd", "uniref30")
# Templates: pdb70 (HHsearch) finds them, pdb_mmcif holds their structures, pdb_seqres is the multimer's search.
TEMPLATE_DATABASES = ("pdb70", "pdb_mmcif")
MULTIMER_TEMPLATE_DATABASES = ("pdb_seqres", "pdb_mmcif")
MMCIF_FILES = "mmcif_files"
OBSOLETE = "obsolete.dat"
FASTA_SUFFIXES = (".fasta", ".fa", ".fasta.gz", ".fa.gz")
_META = ".af2db.json"


@dataclass(frozen=True)
class Database:
    name: str
    path: Path  # a FASTA file (jackhmmer, hmmsearch); an ffindex prefix (HHblits, HHsearch); the mmCIF folder
    tool: str  # "jackhmmer" | "hhblits" | "hhsearch" | "mmcif" | "hmmsearch" | "mmseqs"
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


def read_fasta(path: Path) -> list[tuple[str, str]]:
    """(name, sequence) of each record of a database FASTA file (names are the header's first word)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    records: list[tuple[str, str]] = []
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                records.append((line[1:].split()[0], ""))
            elif line.strip() and records:
                records[-1] = (records[-1][0], records[-1][1] + line.strip())
    return records


def count_sequences(path: Path) -> int:
    opener = gzip.open if path.name.endswith(".gz") else open
    n = 0
    with opener(path, "rb") as fh:
        for line in fh:
            if line.startswith(b">"):
                n += 1
    return n


def _describe_mmcif(folder: Path) -> Database:
    """pdb_mmcif: its structures' folder, with their count (and their bytes) as identity beside VERSION."""
    files = sorted(folder.glob("*.cif"))
    version_file = folder.parent / "VERSION"
    size = sum(p.stat().st_size for p in files)
    version = version_file.read_text().strip().splitlines()[0] if version_file.is_file() else \
        f"{MMCIF_FILES}@{max((int(p.stat().st_mtime) for p in files), default=0)}"
    return Database("pdb_mmcif", folder, "mmcif", version, size, len(files))


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
    if count is None and tool in ("jackhmmer", "hmmsearch"):
        count = count_sequences(data_file)
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
    from af2jobs.pipeline import mmseqs

    for name in mmseqs.DATABASES:
        prefix = mmseqs.prefix_in(db_root / name)
        if prefix is not None:
            found.append(_describe(name, prefix, "mmseqs", Path(f"{prefix}.index")))
    pdb70 = _ffindex_prefix(db_root / "pdb70")
    if pdb70 is not None:
        found.append(_describe("pdb70", pdb70, "hhsearch", Path(f"{pdb70}_hhm.ffdata")))
    mmcif = db_root / "pdb_mmcif" / MMCIF_FILES
    if mmcif.is_dir() and any(mmcif.glob("*.cif")):
        found.append(_describe_mmcif(mmcif))
    seqres = db_root / "pdb_seqres" / "pdb_seqres.txt"
    if seqres.is_file():
        found.append(_describe("pdb_seqres", seqres, "hmmsearch", seqres))
    return found


def template_source(found: list[Database], multimer: bool = False) -> tuple[Database, Database] | None:
    """(pdb70, pdb_mmcif) when both are installed (for a complex: pdb_seqres, pdb_mmcif, as AlphaFold-Multimer
    searches); None when neither is (templates are then empty, as AlphaFold's are when it finds none);
    DatabaseError naming the missing one when only one of them is."""
    names = MULTIMER_TEMPLATE_DATABASES if multimer else TEMPLATE_DATABASES
    by_name = {db.name: db for db in found}
    present = [name for name in names if name in by_name]
    if not present:
        return None
    if len(present) == 1:
        missing = next(n for n in names if n not in by_name)
        raise DatabaseError(f"templates need {names[0]} and {names[1]}, and {missing} is not installed (af2 db)")
    return by_name[names[0]], by_name[names[1]]


# What each db_preset searches (AlphaFold 2.3's run_alphafold): UniRef90 and MGnify with jackhmmer either way;
# full_dbs adds BFD + UniRef30 with HHblits, reduced_dbs small BFD with jackhmmer; then the templates (pdb70 and
# pdb_mmcif; a complex's chains pdb_seqres and pdb_mmcif). Every one of them must be installed: a search that left
# one out would say full_dbs and search less.
PRESET_DATABASES: dict[str, tuple[str, ...]] = {
    "full_dbs": ("uniref90", "mgnify", "bfd", "uniref30"),
    "reduced_dbs": ("uniref90", "mgnify", "small_bfd"),
}
# msa_mode mmseqs2: ColabFold's two searches, UniRef and the environmental databases, then the same templates.
MMSEQS_DATABASES = ("mmseqs_uniref", "mmseqs_env")
NO_DATABASE = "no sequence database is configured (run 'af2 db fetch-demo' or set AF2_DB_ROOT)"


def _require(found: list[Database], wanted: tuple[str, ...], what: str, other: str) -> None:
    """DatabaseError naming what `what` searches and is not installed."""
    if not found:
        raise DatabaseError(NO_DATABASE)
    names = {db.name for db in found}
    missing = [name for name in wanted if name not in names]
    if missing:
        how = " (HHblits: hhsuite)" if {"bfd", "uniref30"} & set(missing) and shutil.which("hhblits") is None else ""
        raise DatabaseError(
            f"{what} searches {', '.join(wanted)}, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            f"not installed{how} (installed: {', '.join(sorted(names))}): install "
            f"{'it' if len(missing) == 1 else 'them'} (af2 db), or {other}")


def for_mode(found: list[Database], msa_mode: str, db_preset: str, **kwargs) -> list[Database]:
    """What a search in msa_mode uses: for_preset's databases (jackhmmer: AlphaFold's tools), or MMseqs2's UniRef
    and environmental databases with the same template search; DatabaseError naming any that is missing."""
    if msa_mode == "jackhmmer":
        return for_preset(found, db_preset, **kwargs)
    _require(found, MMSEQS_DATABASES + TEMPLATE_DATABASES, "msa_mode mmseqs2", "use msa_mode jackhmmer")
    templates = template_source(found)
    return [db for db in found if db.tool == "mmseqs"] + [templates[0]]


def for_preset(found: list[Database], db_preset: str, *, multimer: bool = False,
               pairing: bool = False) -> list[Database]:
    """The databases db_preset searches, with the template search; DatabaseError naming what is missing.

    For a chain of a complex (multimer) the template search is hmmsearch of pdb_seqres instead of HHsearch of
    pdb70, and a heteromer's chains (pairing) are searched against UniProt too, whose species identifiers pair
    the rows of different chains (AlphaFold-Multimer searches UniProt only when the chains differ)."""
    wanted = PRESET_DATABASES[db_preset] + (("uniprot",) if pairing else ())
    template_dbs = MULTIMER_TEMPLATE_DATABASES if multimer else TEMPLATE_DATABASES
    other = "reduced_dbs" if db_preset == "full_dbs" else "full_dbs"
    _require(found, wanted + template_dbs, f"db_preset {db_preset}" + (" for a complex" if multimer else ""),
             f"use db_preset {other} if it is installed")
    templates = template_source(found, multimer)
    return [db for db in found if db.name in wanted] + [templates[0]]
