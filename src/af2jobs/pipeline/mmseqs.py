"""The MMseqs2 MSA mode: MMseqs2's iterative profile search (Debian's `mmseqs`) of UniRef and an environmental
database, with ColabFold's search and MSA-filter settings, written as A3M under ColabFold's file names.

    db_root/mmseqs_uniref/<name>   an MMseqs2 sequence database (`mmseqs createdb`; `createindex` optional)
    db_root/mmseqs_env/<name>      the same for an environmental set (optional)

Per database, for all the queries of one call at once (one `createdb` of the queries):

    search     --num-iterations 3 -s 8 -e 0.1 --max-seqs 10000 -a      (ColabFold's search_param)
    result2msa --msa-format-mode 6 --filter-msa 1 --filter-min-enable 1000 --diff 3000
               --qid 0.0,0.2,0.4,0.6,0.8,1.0 --qsc 0 --max-seq-id 0.95  (ColabFold's filter_param)
    unpackdb   one A3M per query, its first row the query

ColabFold's own databases are clustered profiles that it expands through their members (expandaln); a database
here is searched sequence by sequence, which needs no cluster files and finds the same members directly.
`build` makes a database from a FASTA file (af2 db, the demo database).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from af2jobs.errors import DatabaseError

DATABASES = ("mmseqs_uniref", "mmseqs_env")
OUTPUT_NAMES = {"mmseqs_uniref": "uniref.a3m", "mmseqs_env": "bfd.mgnify30.metaeuk30.smag30.a3m"}
SEARCH = ["--num-iterations", "3", "-s", "8", "-e", "0.1", "--max-seqs", "10000", "-a"]
FILTER = ["--msa-format-mode", "6", "--filter-msa", "1", "--filter-min-enable", "1000", "--diff", "3000",
          "--qid", "0.0,0.2,0.4,0.6,0.8,1.0", "--qsc", "0", "--max-seq-id", "0.95"]
OPTIONS = {"search": SEARCH, "result2msa": FILTER}  # what the MSA cache key records of this mode


def binary() -> str:
    found = shutil.which("mmseqs")
    if found is None:
        raise DatabaseError("mmseqs is not installed: msa_mode mmseqs2 needs MMseqs2 (Debian mmseqs2; make tools)")
    return found


def _run(*args: str | Path) -> None:
    result = subprocess.run([binary(), *map(str, args), "-v", "1"], capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DatabaseError(f"mmseqs {args[0]} failed (exit {result.returncode}): {' '.join(tail)}")


def prefix_in(directory: Path) -> Path | None:
    """The MMseqs2 database in a directory: the one `<name>.dbtype` that is not a header or index file."""
    if not directory.is_dir():
        return None
    found = sorted(p for p in directory.glob("*.dbtype")
                   if not p.name.endswith(("_h.dbtype", ".idx.dbtype")) and "." not in p.name[: -len(".dbtype")])
    return found[0].with_suffix("") if found else None


def build(fasta: Path, prefix: Path, *, index: bool = False, cpus: int = 1, split_memory: str | None = None) -> Path:
    """An MMseqs2 sequence database of a FASTA file at `prefix` (its folder is made); an index too on request,
    in parts that fit `split_memory` (createindex's --split-memory-limit, e.g. "100G") when given."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _run("createdb", fasta, prefix)
    if index:
        limit = ["--split-memory-limit", split_memory] if split_memory else []
        with tempfile.TemporaryDirectory(dir=prefix.parent) as tmp:
            _run("createindex", prefix, tmp, "--threads", str(cpus), *limit)
    return prefix


def search(queries: dict[str, str], databases: list[tuple[str, Path]], out_dirs: dict[str, Path],
           cpus: int) -> dict[str, dict[str, int]]:
    """Search every query against every database; write out_dirs[query]/<OUTPUT_NAMES[db]>. Returns the hits
    (A3M rows besides the query) per query and database."""
    hits: dict[str, dict[str, int]] = {name: {} for name in queries}
    with tempfile.TemporaryDirectory(prefix="af2-mmseqs-") as tmp_name:
        tmp = Path(tmp_name)
        names = list(queries)
        (tmp / "queries.fasta").write_text("".join(f">{i}\n{queries[n]}\n" for i, n in enumerate(names)))
        _run("createdb", tmp / "queries.fasta", tmp / "qdb", "--shuffle", "0")
        for db_name, prefix in databases:
            work = tmp / db_name
            work.mkdir()
            _run("search", tmp / "qdb", prefix, work / "res", work / "tmp", "--threads", str(cpus), *SEARCH)
            _run("result2msa", tmp / "qdb", prefix, work / "res", work / "msa", "--threads", str(cpus), *FILTER)
            _run("unpackdb", work / "msa", work / "a3m", "--unpack-name-mode", "0", "--unpack-suffix", ".a3m")
            for i, name in enumerate(names):
                text = _query_first((work / "a3m" / f"{i}.a3m").read_text(), queries[name])
                out = out_dirs[name] / OUTPUT_NAMES[db_name]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
                hits[name][db_name] = max(0, text.count(">") - 1)
    return hits


def _query_first(a3m: str, sequence: str) -> str:
    """The A3M with the query as its first row, named `query` (AlphaFold's parsers take row 0 as the query)."""
    text = a3m.replace("\x00", "").strip()
    if not text:
        return f">query\n{sequence}\n"
    header, _, rest = text.partition("\n")
    first, _, others = rest.partition("\n>")
    if first.replace("\n", "") != sequence:
        raise DatabaseError("mmseqs result2msa did not put the query first")
    return f">query\n{sequence}\n" + (f">{others}\n" if others else "")


__all__ = ["DATABASES", "OPTIONS", "OUTPUT_NAMES", "binary", "build", "prefix_in", "search"]
