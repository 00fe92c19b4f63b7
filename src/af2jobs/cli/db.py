"""`af2 db list`, `af2 db fetch-demo` and `af2 db pad`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from af2jobs.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="sequence databases")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    ls = dsub.add_parser("list", help="show configured databases with size, sequence count and version")
    ls.add_argument("--db-root", type=Path, help="database root (default: AF2_DB_ROOT or DATA_DIR/databases)")
    ls.set_defaults(func=list_databases)
    fetch = dsub.add_parser("fetch-demo", help="install the small demo database from Debian's package registry")
    fetch.add_argument("--db-root", type=Path)
    fetch.add_argument("--force", action="store_true", help="fetch again even when present")
    fetch.set_defaults(func=fetch_demo)
    pad = dsub.add_parser("pad", help="the GPU form of the MMseqs2 databases (msa_mode mmseqs2 on a GPU), in place")
    pad.add_argument("--db-root", type=Path)
    pad.set_defaults(func=pad_databases)


def _root(args) -> Path:
    return args.db_root or Settings().database_root


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def list_databases(args) -> int:
    from af2jobs.pipeline import databases

    root = _root(args)
    found = databases.discover(root)
    console = Console()
    if not found:
        console.print(f"No databases under {root}. Run 'af2 db fetch-demo' for the small demo database.")
        return 1
    table = Table(title=f"Databases under {root}")
    for col in ("name", "tool", "size", "sequences", "version", "path"):
        table.add_column(col)
    for d in found:
        table.add_row(d.name, d.tool, _size(d.size_bytes), f"{d.sequences:,}" if d.sequences is not None else "-",
                      d.version, str(d.path))
    console.print(table)
    if any(d.tool == "mmseqs" for d in found):
        from af2jobs.errors import DatabaseError
        from af2jobs.pipeline import mmseqs

        try:
            line = mmseqs.plan([d.path for d in found if d.tool == "mmseqs"], os.cpu_count() or 1)[1]
        except DatabaseError as exc:
            line = exc.message
        console.print(f"msa_mode mmseqs2: {line}", highlight=False)
    return 0


def pad_databases(args) -> int:
    """makepaddedseqdb of each MMseqs2 database (its clusters' keys following), so a GPU can search it; the CPU
    searches the padded form too."""
    from af2jobs.errors import DatabaseError
    from af2jobs.pipeline import databases, mmseqs

    found = [d for d in databases.discover(_root(args)) if d.tool == "mmseqs"]
    if not found:
        print(f"No MMseqs2 database under {_root(args)} (af2 db fetch-demo builds the demo's).", file=sys.stderr)
        return 1
    for db in found:
        state = "already padded" if mmseqs.padded(db.path) else "padded"
        try:
            mmseqs.pad(db.path, os.cpu_count() or 1)
        except DatabaseError as exc:
            print(f"{db.name}: {exc.message}", file=sys.stderr)
            return 1
        print(f"{db.name}: {db.path} {state}")
    return 0


def fetch_demo(args) -> int:
    from af2jobs.pipeline import demo

    demo.fetch_demo(_root(args), force=args.force)
    return 0
