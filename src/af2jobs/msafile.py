"""A multiple sequence alignment that a request brings for a record (its search is then skipped), checked before
anything is stored: A3M (or aligned FASTA) and Stockholm, the two formats AlphaFold's parsers read. Light: no
AlphaFold here (the API checks these); the pipeline parses the file with AlphaFold's own parsers.

    check(text, query, record) -> Supplied(format, text)   ValidationError naming the record and the line otherwise

The rules, AlphaFold's: the first row is the query itself (gaps and insertions aside), and every row has the
query's columns: in A3M, as many match states (upper case and '-') as the query has residues; in Stockholm, as
many aligned columns as the first row.

A3M as ColabFold writes it starts with a `#<lengths>\t<cardinalities>` line (`#93\t1` for a monomer): its
lengths must be the query's. Comment lines (`#`) are no rows: the text kept (Supplied.text) has none, since
AlphaFold's A3M parser would read them as residues of the row before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from af2jobs import errors

FORMATS = ("a3m", "sto")
SUPPLIED_MSA = "supplied_msa"  # a record's work dir keeps the request's MSA as msas/supplied_msa.a3m|.sto
MAX_ROWS = 100_000
_A3M_ROW = re.compile(r"[A-Za-z\-.*]*")
_STO_ROW = re.compile(r"[A-Za-z\-.*]+")
_COLABFOLD_HEADER = re.compile(r"#\s*(\d+(?:,\d+)*)\s+(\d+(?:,\d+)*)\s*")


@dataclass(frozen=True)
class Supplied:
    """A checked MSA: its format and its text as stored for the pipeline (no BOM, '\\n' line ends, for A3M no
    comment lines)."""

    format: str
    text: str


def _fail(record: str, line: int | None, message: str) -> errors.ValidationError:
    where = f"msa for record '{record}'" + (f", line {line}" if line is not None else "")
    return errors.ValidationError(f"{where}: {message}", field=f"msa.{record}")


def check(text: str, query: str, record: str) -> Supplied:
    """`text` as a checked MSA of `query`: its format ("a3m" or "sto") and its text as stored."""
    body = text.removeprefix("\ufeff").replace("\r\n", "\n")
    lines = [(n, line.strip()) for n, line in enumerate(body.splitlines(), 1) if line.strip()]
    if not lines:
        raise _fail(record, None, "it is empty")
    if lines[0][1].startswith("# STOCKHOLM"):
        _check_stockholm(body, query, record)
        return Supplied("sto", body)
    for n, line in lines:
        if not line.startswith("#"):
            break
        _check_colabfold_header(line, n, query, record)
    if not line.startswith(">"):
        raise _fail(record, n, "not an MSA: an A3M starts with a '>' header (after ColabFold's '#<lengths>' line, "
                               "if any), a Stockholm file with '# STOCKHOLM 1.0'")
    _check_a3m(body, query, record)
    kept = [raw for raw in body.splitlines() if not raw.strip().startswith("#")]
    return Supplied("a3m", "\n".join(kept) + "\n")


def _check_colabfold_header(line: str, n: int, query: str, record: str) -> None:
    """ColabFold's first line `#<lengths>\\t<cardinalities>`: one length, the query's (a complex's MSA has one per
    distinct chain, and pairs their rows: it is no MSA of one record). Other comment lines pass."""
    match = _COLABFOLD_HEADER.fullmatch(line)
    if match is None:
        return
    lengths = [int(x) for x in match.group(1).split(",")]
    if len(lengths) > 1:
        raise _fail(record, n, f"its header {line.split()[0]} {match.group(2)} is a complex's (chains of "
                               f"{', '.join(map(str, lengths))} residues): give a record's own MSA")
    if lengths[0] != len(query):
        raise _fail(record, n, f"its header says the query has {lengths[0]} residues; record '{record}' has "
                               f"{len(query)}")


def _a3m_rows(body: str, record: str) -> list[tuple[int, str, str]]:
    """(line of the header, name, sequence) of each row."""
    rows: list[tuple[int, str, str]] = []
    for n, raw in enumerate(body.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(">"):
            rows.append((n, line[1:].split(maxsplit=1)[0] if line[1:].strip() else "", ""))
            continue
        if not rows:
            raise _fail(record, n, "a sequence line before the first '>' header")
        if not _A3M_ROW.fullmatch(line):
            bad = next(c for c in line if not _A3M_ROW.fullmatch(c))
            raise _fail(record, n, f"{bad!r} is not an alignment letter (A-Z, a-z insertions, '-' gaps)")
        rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][2] + line)
    return rows


def _check_a3m(body: str, query: str, record: str) -> None:
    rows = _a3m_rows(body, record)
    if len(rows) > MAX_ROWS:
        raise _fail(record, None, f"{len(rows):,} rows; at most {MAX_ROWS:,}")
    line, _, first = rows[0]
    if first != query:
        raise _fail(record, line, "the first row is not the query sequence, as it is (no gaps, no insertions: "
                                  "AlphaFold requires the query first)")
    for line, name, seq in rows:
        matches = sum(1 for c in seq if c.isupper() or c == "-")
        if matches != len(query):
            raise _fail(record, line, f"row {name or '(unnamed)'} has {matches} match columns (upper case and "
                                      f"'-'); the query has {len(query)} residues")


def _check_stockholm(body: str, query: str, record: str) -> None:
    order: list[str] = []
    aligned: dict[str, str] = {}
    first_line: dict[str, int] = {}
    ended = False
    for n, raw in enumerate(body.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "//":
            ended = True
            break
        parts = line.split()
        if len(parts) != 2 or not _STO_ROW.fullmatch(parts[1]):
            raise _fail(record, n, "a Stockholm row is '<name> <aligned sequence>'")
        name, seq = parts
        if name not in aligned:
            order.append(name)
            aligned[name], first_line[name] = "", n
        aligned[name] += seq
    if not ended:
        raise _fail(record, None, "the Stockholm file does not end with '//'")
    if not order:
        raise _fail(record, None, "the Stockholm file has no rows")
    first = aligned[order[0]]
    if first.replace("-", "").replace(".", "").upper() != query:
        raise _fail(record, first_line[order[0]],
                    "the first row is not the query sequence (AlphaFold requires the query first)")
    for name in order:
        if len(aligned[name]) != len(first):
            raise _fail(record, first_line[name], f"row {name} has {len(aligned[name])} columns; the first row has "
                                                  f"{len(first)}")


def assign(values: list[str], record_names: list[str]) -> dict[str, Path]:
    """`--msa FILE` (a single-record input) or `--msa NAME=FILE` (one per record) as record name -> file."""
    assigned: dict[str, Path] = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not sep:
            if len(record_names) != 1:
                raise errors.ValidationError(f"--msa {value}: the input has {len(record_names)} records; name the "
                                             "record: --msa NAME=FILE", field="msa")
            name, file = record_names[0], value
        if name not in record_names:
            raise errors.ValidationError(f"--msa {value}: no record {name} (records: {', '.join(record_names)})",
                                         field="msa")
        path = Path(file)
        if not path.is_file():
            raise errors.ValidationError(f"--msa {value}: {path} does not exist or is not a file", field="msa")
        assigned[name] = path
    return assigned


__all__ = ["FORMATS", "SUPPLIED_MSA", "Supplied", "assign", "check"]
