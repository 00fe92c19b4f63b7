"""`af2 db list` and `af2 db fetch-demo`."""

from __future__ import annotations

import argparse
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
    return 0


def fetch_demo(args) -> int:
    from af2jobs.pipeline import demo

    demo.fetch_demo(_root(args), force=args.force)
    return 0
