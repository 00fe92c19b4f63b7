"""How a record's MSA is searched: start here. Every entry (a job's MSA stage, locally or on AWS Batch, and
`af2 predict`) comes to run_msa through af2jobs.pipeline.run.msa_stage:

    a monomer   run.msa_stage -> run._search -> run_msa (this module), once per record
    a complex   run.msa_stage -> multimer.msa_stage -> multimer.search -> run_msa once per DISTINCT chain, then,
                in msa_mode mmseqs2 with chains that differ, mmseqs.search_paired (the rows paired by taxon)
    own MSA     jobrun writes the request's MSA as msas/supplied_msa.* (SUPPLIED_MSA); nothing is searched
    what        databases.for_mode picks the databases of (msa_mode, db_preset), naming any that is missing
    cache       each sequence's searches are one entry under <cache>/msa/<key[:2]>/<key> (cache_key: the
                sequence, the options, the databases' identities); on AWS the entries are copied to and from S3
                (awsrun.msacache)

msa_mode jackhmmer (AlphaFold's searches): jackhmmer (pyhmmer, in-process) per database and HHblits for
full_dbs, concurrently; templates by HHsearch of pdb70 with the UniRef90 MSA (a complex's chains: hmmsearch of
pdb_seqres, and UniProt, whose species pair the rows).

msa_mode mmseqs2 (ColabFold's searches, af2jobs.pipeline.mmseqs): MMseqs2 18-8cc5c, UniRef30-style clusters
expanded to their members, then the environmental database with the UniRef profiles; templates by HHsearch of
pdb70 with the UniRef A3M. A job's records go in one MMseqs2 run (prefetch, called by run.prefetch_msas before
the records' stages), each stored as its cache entry, so that run_msa then finds it. It runs on the GPU when one
is here with MMseqs2's GPU build and padded databases (mmseqs.plan), on the CPU otherwise; the line saying which
is in each search's report (SearchReport.engine), versions.json and the report.

Output is AlphaFold's `msas/` layout, so AlphaFold's own parsers read it:
uniref90_hits.sto, mgnify_hits.sto, small_bfd_hits.sto, bfd_uniref_hits.a3m; MMseqs2's uniref.a3m,
bfd.mgnify30.metaeuk30.smag30.a3m and pair.a3m (ColabFold's names).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from af2jobs import atomic
from af2jobs.errors import DatabaseError, StageError
from af2jobs.msafile import SUPPLIED_MSA
from af2jobs.pipeline import mmseqs, templates
from af2jobs.pipeline.databases import NO_DATABASE, Database

# AlphaFold's jackhmmer settings (alphafold/data/tools/jackhmmer.py) and hit limits (alphafold/data/pipeline.py).
JACKHMMER_OPTIONS = {"max_iterations": 1, "E": 1e-4, "incE": 1e-4, "F1": 5e-4, "F2": 5e-5, "F3": 5e-7}
HIT_LIMITS = {"uniref90": 10_000, "mgnify": 501, "small_bfd": None, "uniprot": 50_000}
OUTPUT_NAMES = {
    "uniref90": "uniref90_hits.sto",
    "mgnify": "mgnify_hits.sto",
    "small_bfd": "small_bfd_hits.sto",
    "bfd_uniref": "bfd_uniref_hits.a3m",
    "pdb70": "pdb_hits.hhr",
    "uniprot": "uniprot_hits.sto",
    "pdb_seqres": "pdb_hits.sto",
    **mmseqs.OUTPUT_NAMES,
}
CACHE_FORMAT = 2  # 2: gaps in insert columns are '-' (see _stockholm)
# Databases up to this size are held in memory (several threads search them); larger ones are streamed.
IN_MEMORY_LIMIT = 2 << 30

Progress = Callable[[str, str, dict], None]  # (database, event, details)


@dataclass
class SearchReport:
    database: str
    output: str
    hits: int
    seconds: float
    engine: str = ""  # MMseqs2's: which binary, and on the GPU or the CPU (and why)


@dataclass
class MsaReport:
    searches: list[SearchReport]
    cache: str  # "hit" | "miss" | "off"
    cache_key: str
    seconds: float

    def to_dict(self) -> dict:
        return {"searches": [asdict(s) for s in self.searches], "cache": self.cache,
                "cache_key": self.cache_key, "seconds": round(self.seconds, 3)}


def cache_key(sequence: str, databases: list[Database]) -> str:
    fields = {
        "format": CACHE_FORMAT, "sequence": sequence, "options": JACKHMMER_OPTIONS, "limits": HIT_LIMITS,
        "databases": sorted(db.identity for db in databases),
    }
    if any(db.tool == "mmseqs" for db in databases):
        fields["mmseqs"] = mmseqs.OPTIONS
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def unique_chains(record) -> list[tuple[str, str]]:
    """(chain id, sequence) of each distinct sequence of a complex, at its first chain (AlphaFold-Multimer searches
    identical chains once); for a single record, one ("", sequence)."""
    from af2jobs.fasta import CHAIN_IDS

    if not record.chains:
        return [("", record.sequence)]
    seen: dict[str, str] = {}
    for chain_id, chain in zip(CHAIN_IDS, record.chains):
        seen.setdefault(chain.sequence, chain_id)
    return [(chain_id, seq) for seq, chain_id in seen.items()]


def searched_for(record, databases: list[Database], db_preset: str, msa_mode: str = "jackhmmer") -> list[Database]:
    """The databases a record's searches use (DatabaseError naming what is missing): a complex's chains search
    pdb_seqres for templates, and UniProt as well when they differ (the rows that pair)."""
    from af2jobs.pipeline.databases import for_mode

    if not record.chains:
        return for_mode(databases, msa_mode, db_preset)
    return for_mode(databases, msa_mode, db_preset, multimer=True, pairing=len(unique_chains(record)) > 1)


def record_keys(record, databases: list[Database], db_preset: str, msa_mode: str = "jackhmmer") -> list[str]:
    """The MSA cache keys of a record: one per distinct chain of a complex (a chain seen before costs no search)."""
    searched = searched_for(record, databases, db_preset, msa_mode)
    return [cache_key(seq, searched) for _, seq in unique_chains(record)]


_blocks: dict[tuple, object] = {}
_blocks_lock = threading.Lock()


def _targets(db: Database):
    """A digital sequence block kept in memory for small databases (reused across jobs), else a streamed file."""
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    if db.size_bytes > IN_MEMORY_LIMIT:
        return pyhmmer.easel.SequenceFile(str(db.path), digital=True, alphabet=alphabet)
    key = (str(db.path), db.size_bytes, db.version)
    with _blocks_lock:
        if key not in _blocks:
            with pyhmmer.easel.SequenceFile(str(db.path), digital=True, alphabet=alphabet) as fh:
                _blocks[key] = fh.read_block()
        return _blocks[key]


def _stockholm(query_name: str, sequence: str, msa, limit: int | None) -> tuple[str, int]:
    """Stockholm text whose first row is the query, as AlphaFold's parsers expect.

    pyhmmer's TopHits.to_msa() leaves the query out; its reference (RF) line marks the match columns,
    which for a single-sequence HMM are exactly the query's residues. A gap in an insert column is written '-'
    (HMMER writes '.'): AlphaFold's parse_stockholm would count a '.' as a deleted residue, and its
    convert_stockholm_to_a3m (the template search's input) drops the dots and shifts the row.
    """
    reference = msa.reference.decode() if isinstance(msa.reference, bytes) else msa.reference
    residues = iter(sequence)
    query_row = "".join(next(residues) if c.lower() == "x" else "-" for c in reference)
    names = [n.decode() if isinstance(n, bytes) else n for n in msa.names]
    rows = [row.replace(".", "-") for row in msa.alignment]
    if limit is not None:
        names, rows = names[: limit - 1], rows[: limit - 1]
    width = max([len(query_name)] + [len(n) for n in names]) + 1
    lines = ["# STOCKHOLM 1.0", ""]
    lines.append(f"{query_name:<{width}} {query_row}")
    lines += [f"{n:<{width}} {r}" for n, r in zip(names, rows)]
    lines += [f"{'#=GC RF':<{width}} {reference}", "//", ""]
    return "\n".join(lines), len(rows)


def _query_only(query_name: str, sequence: str) -> str:
    return f"# STOCKHOLM 1.0\n\n{query_name} {sequence}\n#=GC RF {'x' * len(sequence)}\n//\n"


def _jackhmmer(sequence: str, db: Database, out: Path, cpus: int) -> int:
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    query = pyhmmer.easel.TextSequence(name=b"query", sequence=sequence).digitize(alphabet)
    targets = _targets(db)
    result = next(iter(pyhmmer.hmmer.jackhmmer([query], targets, cpus=cpus, checkpoints=False, **JACKHMMER_OPTIONS)))
    included = [h for h in result.hits if h.included]
    if not included:
        out.write_text(_query_only("query", sequence))
        return 0
    msa = result.hits.to_msa(alphabet, trim=True, all_consensus_cols=True)
    text, n = _stockholm("query", sequence, msa, HIT_LIMITS.get(db.name))
    out.write_text(text)
    return n


def _hhblits(sequence: str, dbs: list[Database], out: Path, cpus: int) -> int:
    from alphafold.data.tools import hhblits

    runner = hhblits.HHBlits(binary_path=shutil.which("hhblits"), databases=[str(d.path) for d in dbs], n_cpu=cpus)
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "query.fasta"
        fasta.write_text(f">query\n{sequence}\n")
        a3m = runner.query(str(fasta))[0]["a3m"]
    out.write_text(a3m)
    return max(0, a3m.count(">") - 1)


def _search_one(name: str, fn: Callable[[], int], notify: Progress) -> SearchReport:
    """One search, timed and announced; a failure is a StageError naming the database."""
    notify(name, "start", {})
    t0 = time.perf_counter()
    try:
        hits = fn()
    except Exception as exc:  # a broken database names itself in the job's error
        raise StageError(f"search against {name} failed: {exc}", stage="msa") from exc
    report = SearchReport(name, OUTPUT_NAMES[name], hits, round(time.perf_counter() - t0, 3))
    notify(name, "done", {"hits": hits, "seconds": report.seconds})
    return report


def mmseqs_plan(prefixes: list[Path], cpus: int) -> tuple[bool, str]:
    """mmseqs.plan (on the GPU or the CPU, and the line that says so), a database it cannot use the MSA stage's
    error."""
    try:
        return mmseqs.plan(prefixes, cpus)
    except DatabaseError as exc:
        raise StageError(exc.message, stage="msa") from None


def _mmseqs(queries: dict[str, str], dbs: list[Database], dirs: dict[str, Path], cpus: int,
            notify: Progress) -> dict[str, list[SearchReport]]:
    """One MMseqs2 run of every query against its databases, on the GPU where it can (mmseqs.plan): each query's
    reports, its seconds its share of the run."""
    gpu, engine = mmseqs_plan([db.path for db in dbs], cpus)
    for db in dbs:
        notify(db.name, "start", {"queries": len(queries), "engine": engine})
    t0 = time.perf_counter()
    try:
        hits = mmseqs.search(queries, [(db.name, db.path) for db in dbs], dirs, cpus, gpu=gpu)
    except Exception as exc:
        raise StageError(f"MMseqs2 search against {', '.join(db.name for db in dbs)} failed: {exc}",
                         stage="msa") from exc
    seconds = round(time.perf_counter() - t0, 3)
    share = round(seconds / len(queries), 3)
    for db in dbs:
        notify(db.name, "done", {"hits": sum(h[db.name] for h in hits.values()), "seconds": seconds})
    return {q: [SearchReport(db.name, OUTPUT_NAMES[db.name], hits[q][db.name], share, engine) for db in dbs]
            for q in queries}


def _restore(cache_dir: Path, msa_dir: Path) -> list[SearchReport] | None:
    meta = cache_dir / "report.json"
    if not meta.is_file():
        return None
    searches = [SearchReport(**s) for s in json.loads(meta.read_text())]
    for s in searches:
        shutil.copyfile(cache_dir / s.output, msa_dir / s.output)
    return searches


def _store(cache_dir: Path, msa_dir: Path, searches: list[SearchReport]) -> None:
    """Write the cache entry into a temporary sibling and rename it, so a reader never sees half of one. Another
    process that stored the same entry first wins: theirs is as good."""
    with atomic.staging_dir(cache_dir, replace=False) as tmp:
        for s in searches:
            shutil.copyfile(msa_dir / s.output, tmp / s.output)
        (tmp / "report.json").write_text(json.dumps([asdict(s) for s in searches]))


def prefetch(sequences: list[str], databases: list[Database], *, cpus: int, cache_root: Path | None,
             progress: Progress | None = None) -> int:
    """msa_mode mmseqs2 for several sequences: one MMseqs2 run for all those not yet in the cache, each stored as
    its cache entry (with its template search), so that each record's run_msa then finds it. Returns how many
    sequences were searched (none without the cache, or for fewer than two)."""
    mm = [db for db in databases if db.tool == "mmseqs"]
    if not mm or cache_root is None:
        return 0
    todo: dict[str, tuple[str, Path]] = {}
    for sequence in dict.fromkeys(sequences):
        key = cache_key(sequence, databases)
        entry = cache_root / key[:2] / key
        if not (entry / "report.json").is_file():
            todo[key] = (sequence, entry)
    if len(todo) < 2:
        return 0
    notify = progress or (lambda db, event, details: None)
    pdb70 = next((db for db in databases if db.tool == "hhsearch"), None)
    with tempfile.TemporaryDirectory(prefix="af2-prefetch-") as tmp:
        dirs = {key: Path(tmp) / key for key in todo}
        reports = _mmseqs({key: seq for key, (seq, _) in todo.items()}, mm, dirs, cpus, notify)
        for key, (_, entry) in todo.items():
            searches = reports[key]
            a3m = dirs[key] / OUTPUT_NAMES["mmseqs_uniref"]
            if pdb70 is not None and a3m.is_file():
                searches.append(_search_one("pdb70", lambda d=dirs[key], a=a3m: templates.search(d, pdb70.path, a),
                                            notify))
            _store(entry, dirs[key], searches)
    return len(todo)


def supplied(msa_dir: Path) -> Path | None:
    """The request's own MSA in msa_dir, if it brought one."""
    return next(iter(sorted(msa_dir.glob(f"{SUPPLIED_MSA}.*"))), None)


def supplied_report(path: Path) -> MsaReport:
    """The MSA report of a supplied MSA: no search, its rows as hits."""
    text = path.read_text()
    if path.suffix == ".a3m":
        rows = text.count("\n>") + text.startswith(">")
    else:  # Stockholm: each row once, however many blocks it is written in
        rows = len({line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith(("#", "//"))})
    return MsaReport([SearchReport("supplied", path.name, max(0, rows - 1), 0.0)], "supplied", "", 0.0)


def run_msa(
    sequence: str,
    databases: list[Database],
    msa_dir: Path,
    *,
    cpus: int,
    cache_root: Path | None = None,
    progress: Progress | None = None,
) -> MsaReport:
    """Search every database (concurrently) and write AlphaFold's msas/ files into msa_dir."""
    start = time.perf_counter()
    notify = progress or (lambda db, event, details: None)
    msa_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(sequence, databases)
    entry = cache_root / key[:2] / key if cache_root is not None else None
    if entry is not None:
        cached = _restore(entry, msa_dir)
        if cached is not None:
            for s in cached:
                notify(s.database, "cached", {"hits": s.hits})
            return MsaReport(cached, "hit", key, time.perf_counter() - start)

    jack = [db for db in databases if db.tool == "jackhmmer"]
    hh = [db for db in databases if db.tool == "hhblits"]
    mm = [db for db in databases if db.tool == "mmseqs"]
    pdb70 = next((db for db in databases if db.tool == "hhsearch"), None)
    seqres = next((db for db in databases if db.tool == "hmmsearch"), None)
    tasks: list[tuple[str, Callable[[int], int]]] = [
        (db.name, lambda c, db=db: _jackhmmer(sequence, db, msa_dir / OUTPUT_NAMES[db.name], c)) for db in jack
    ]
    if hh:
        tasks.append(("bfd_uniref", lambda c: _hhblits(sequence, hh, msa_dir / OUTPUT_NAMES["bfd_uniref"], c)))
    if not tasks and not mm:
        raise StageError(NO_DATABASE, stage="msa")
    cpus_each = max(1, cpus // max(1, len(tasks)))

    def run_one(name: str, fn: Callable[[int], int]) -> SearchReport:
        return _search_one(name, lambda: fn(cpus_each), notify)

    searches = []
    if tasks:
        with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
            searches = list(pool.map(lambda t: run_one(*t), tasks))
    if mm:  # one MMseqs2 run over its databases, on every CPU (it parallelises itself)
        searches += _mmseqs({"query": sequence}, mm, {"query": msa_dir}, cpus, notify)["query"]
    uniref90 = msa_dir / OUTPUT_NAMES["uniref90"]
    if not uniref90.is_file() and mm:  # msa_mode mmseqs2: the UniRef A3M, as ColabFold searches pdb70 with it
        uniref90 = msa_dir / OUTPUT_NAMES["mmseqs_uniref"]
    if pdb70 is not None and uniref90.is_file():  # the templates: HHsearch of the UniRef90 MSA, as AlphaFold does
        searches.append(run_one("pdb70", lambda c: templates.search(msa_dir, pdb70.path, uniref90)))
    if seqres is not None and uniref90.is_file():  # a complex's chain: hmmsearch of pdb_seqres, as AlphaFold-Multimer
        searches.append(run_one("pdb_seqres", lambda c: templates.search_seqres(msa_dir, seqres.path, uniref90, c)))
    if entry is not None:
        _store(entry, msa_dir, searches)
    return MsaReport(searches, "miss" if entry is not None else "off", key, time.perf_counter() - start)
