"""The small real demo database, from Debian's package registry, in AlphaFold's layout (af2 db fetch-demo):

    uniref90/uniref90.fasta      20,000 UniProt sequences (the MMseqs2 example database, mmseqs2-examples)
    mgnify/mgy_clusters.fa       the same 20,000 sequences, standing in for MGnify (no metagenomic sample is
                                 packaged): each preset then searches every database it names
    uniprot/uniprot.fasta        the same 20,000 UniProt sequences: their UniProt names carry the species codes
                                 that pair the rows of a complex's chains (AlphaFold-Multimer's UniProt search)
    small_bfd/...fasta           the 45 globins of HMMER's tutorial (hmmer-examples)
    bfd/, uniref30/              tiny HH-suite databases made from the same globins (first half, second half) with
                                 HH-suite's own tools, so that db_preset full_dbs (HHblits) runs too
    mmseqs_uniref/, mmseqs_env/  MMseqs2 databases in ColabFold's layout of the same UniProt sequences and globins,
                                 made with MMseqs2's own commands (cluster, createsubdb, align; msa_mode mmseqs2)
    pdb_mmcif/, pdb70/, pdb_seqres/
                                 a tiny template database of real PDB entries: 1UBQ (human ubiquitin) and 1A0Q (an
                                 antibody Fab) as the freesasa package ships them (PDB format, written as mmCIF by
                                 gemmi with the release date of their REVDAT records), 1CBS (CRABP2) as libcifpp-dev
                                 ships it (mmCIF); pdb70 made of their chains with HH-suite's tools, pdb_seqres
                                 their sequences in the PDB's seqres format

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
from af2jobs.pipeline import hhsuitedb, mmseqs
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
        "mgnify", "mmseqs2-examples", "usr/share/doc/mmseqs2/example-data/DB.fasta.gz", "mgy_clusters.fa",
        "stand-in for MGnify: the same 20,000 UniProt sequences (MMseqs2 example database), so that both presets "
        "search every database they name",
    ),
    DemoSource(
        "uniprot", "mmseqs2-examples", "usr/share/doc/mmseqs2/example-data/DB.fasta.gz", "uniprot.fasta",
        "20,000 UniProt sequences (MMseqs2 example database): species codes for a complex's MSA pairing",
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
    written += _build_mmseqs_demo(db_root, force=force, log=log)
    written += _build_templates(db_root, force=force, log=log)
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


# (database, name, source FASTA under db_root)
MMSEQS_DEMO = (("mmseqs_uniref", "uniref", "uniref90/uniref90.fasta"), ("mmseqs_env", "env", GLOBINS))
MMSEQS_LAYOUT = "ColabFold layout"  # in VERSION: a database af2jobs built before this layout is built again


def uniprot_taxa(fasta: Path) -> dict[str, int]:
    """A taxon number for each UniProt entry of a FASTA file (`>tr|ACCESSION|NAME_SPECIES`), keyed by the accession
    (the name MMseqs2's createdb keeps): one number per species mnemonic, the species AlphaFold-Multimer pairs by."""
    codes: dict[str, int] = {}
    taxa = {}
    for name, _ in read_fasta(fasta):
        parts = name.split("|")
        if len(parts) == 3 and "_" in parts[2]:
            taxa[parts[1]] = codes.setdefault(parts[2].rsplit("_", 1)[1], len(codes) + 2)  # 1 is the root
    return taxa


def _build_mmseqs_demo(db_root: Path, *, force: bool, log) -> list[Path]:
    """MMseqs2 databases in ColabFold's layout (af2jobs.pipeline.mmseqs.build) of the demo's UniProt sequences
    (UniRef30's place, with their species as taxonomy for pairing) and globins (the environmental database's)."""
    written = []
    for name, stem, source in MMSEQS_DEMO:
        folder = db_root / name
        version = folder / "VERSION"
        if version.is_file() and MMSEQS_LAYOUT in version.read_text() and not force:
            log(f"{name}: present ({folder})")
            continue
        try:
            engine = mmseqs.engine()
        except DatabaseError as exc:
            log(f"{name}: not built: {exc.message}")
            continue
        taxa = uniprot_taxa(db_root / source) if name == "mmseqs_uniref" else None
        with atomic.staging_dir(folder) as staging:
            mmseqs.build(db_root / source, staging / stem, cpus=os.cpu_count() or 1, taxa=taxa)
            (staging / "VERSION").write_text(
                f"demo:{stem} sha256:{_sha256(db_root / source)[:16]} {MMSEQS_LAYOUT}\n"
                f"MMseqs2 {engine.release} database in {MMSEQS_LAYOUT} (cluster 30 %/80 %, createsubdb, align"
                f"{', species taxonomy' if taxa else ''}) of the demo's {source}\n")
        written.append(folder)
        log(f"{name}: {folder} (from {source}, {MMSEQS_LAYOUT})")
    return written


# --- the template database -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    pdb_id: str
    package: str
    member: str  # inside the package: a PDB file (converted) or an mmCIF file, maybe gzipped


TEMPLATE_ENTRIES = (
    Entry("1ubq", "freesasa", "usr/share/freesasa/test-data/1ubq.pdb"),
    Entry("1a0q", "freesasa", "usr/share/freesasa/test-data/1a0q.pdb"),
    Entry("1cbs", "libcifpp-dev", "usr/share/doc/libcifpp-dev/examples/1cbs.cif.gz"),
)
OBSOLETE_HEADER = " LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\n"


def pdb_to_mmcif(pdb_text: str) -> str:
    """A PDB-format entry as mmCIF, written by gemmi, with what AlphaFold's mmCIF parser reads: entities and their
    sequences, chemical component types, and the release date (the REVDAT record of modification type 0)."""
    import gemmi

    st = gemmi.read_pdb_string(pdb_text)
    st.setup_entities()
    st.assign_label_seq_id()
    doc = st.make_mmcif_document(gemmi.MmcifOutputGroups(True))
    block = doc.sole_block()
    for row in block.find("_chem_comp.", ["id", "type"]):
        info = gemmi.find_tabulated_residue(row[0])
        row[1] = gemmi.cif.quote("L-peptide linking" if info is not None and info.is_amino_acid() else "non-polymer")
    released = _release_date(pdb_text)
    loop = block.init_loop("_pdbx_audit_revision_history.", ["ordinal", "data_content_type", "major_revision",
                                                                "minor_revision", "revision_date"])
    loop.add_row(["1", gemmi.cif.quote("Structure model"), "1", "0", released])
    return doc.as_string()


def _release_date(pdb_text: str) -> str:
    import datetime

    for line in pdb_text.splitlines():
        if line.startswith("REVDAT") and line[31:32] == "0":
            day = datetime.datetime.strptime(line[13:22].strip(), "%d-%b-%y").date()
            if day.year > datetime.date.today().year:  # two-digit years: 1987, not 2087
                day = day.replace(year=day.year - 100)
            return day.isoformat()
    raise DatabaseError("the PDB file has no REVDAT record of its release")


def _protein_chains(mmcif_text: str, pdb_id: str) -> dict[str, str]:
    """Author chain id -> sequence of each protein chain, as AlphaFold's parser reads them."""
    from alphafold.data import mmcif_parsing

    parsed = mmcif_parsing.parse(file_id=pdb_id, mmcif_string=mmcif_text)
    if parsed.mmcif_object is None:
        raise DatabaseError(f"{pdb_id}: AlphaFold's mmCIF parser refuses it: {parsed.errors}")
    return dict(parsed.mmcif_object.chain_to_seqres)


def _build_templates(db_root: Path, *, force: bool, log) -> list[Path]:
    mmcif_dir = db_root / "pdb_mmcif"
    if all((db_root / name / "VERSION").is_file() for name in ("pdb_mmcif", "pdb70", "pdb_seqres")) and not force:
        log("pdb_mmcif, pdb70, pdb_seqres: present")
        return []
    missing = hhsuitedb.missing_tools()
    if missing:
        log(f"templates: not built: HH-suite is not installed ({', '.join(missing)}); install the Debian package "
            "hhsuite (make tools) and run af2 db fetch-demo again")
        return []
    chains: dict[str, str] = {}
    sources = []
    with atomic.staging_dir(mmcif_dir) as staging, tempfile.TemporaryDirectory(prefix="af2db-") as tmp:
        (staging / "mmcif_files").mkdir()
        for entry in TEMPLATE_ENTRIES:
            text, version = _package_member(entry.package, entry.member, Path(tmp))
            cif = text if entry.member.endswith((".cif", ".cif.gz")) else pdb_to_mmcif(text)
            (staging / "mmcif_files" / f"{entry.pdb_id}.cif").write_text(cif)
            for chain, seq in _protein_chains(cif, entry.pdb_id).items():
                chains[f"{entry.pdb_id}_{chain}"] = seq
            sources.append(f"{entry.pdb_id}: debian:{entry.package}={version}")
        (staging / "obsolete.dat").write_text(OBSOLETE_HEADER)
        (staging / "VERSION").write_text(f"demo:pdb_mmcif {len(TEMPLATE_ENTRIES)} entries\n" + "\n".join(sources) + "\n")
    with atomic.staging_dir(db_root / "pdb70") as staging:
        hhsuitedb.build(staging / "pdb70", ((name, f">{name}\n{seq}\n") for name, seq in chains.items()))
        (staging / "VERSION").write_text(f"demo:pdb70 {len(chains)} chains\none single-sequence MSA per chain of "
                                         "pdb_mmcif, built with HH-suite\n")
    with atomic.staging_dir(db_root / "pdb_seqres") as staging:
        (staging / "pdb_seqres.txt").write_text("".join(
            f">{name} mol:protein length:{len(seq)}  {name.split('_')[0].upper()}\n{seq}\n"
            for name, seq in chains.items()))
        (staging / "VERSION").write_text(f"demo:pdb_seqres {len(chains)} chains\n")
    log(f"templates: pdb_mmcif ({len(TEMPLATE_ENTRIES)} entries), pdb70 and pdb_seqres ({len(chains)} chains)")
    return [mmcif_dir, db_root / "pdb70", db_root / "pdb_seqres"]


def _package_member(package: str, member: str, work: Path) -> tuple[str, str]:
    """The text of one file of a Debian package, and the package's version."""
    folder = work / package
    if not folder.is_dir():
        folder.mkdir()
        deb = _apt_download(package, folder)
        result = _run(["dpkg-deb", "-x", str(deb), str(folder / "x")], folder)
        if result.returncode != 0:
            raise DatabaseError(f"could not unpack {deb.name}: {result.stderr.strip()}")
        (folder / "version").write_text(_run(["dpkg-deb", "-f", str(deb), "Version"], folder).stdout.strip())
    path = folder / "x" / member
    if not path.is_file():
        raise DatabaseError(f"package {package} has no {member}")
    opener = gzip.open if member.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return fh.read(), (folder / "version").read_text()
