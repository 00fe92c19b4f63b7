"""`af2`: one command line for local predictions and for the job API.

Exit codes: 0 done, 2 bad input (the message names the problem), 1 any other failure.
"""

from __future__ import annotations

import argparse
import sys

from af2jobs.errors import Af2JobsError
from af2jobs.cli import client as client_cmd
from af2jobs.cli import db as db_cmd
from af2jobs.cli import predict as predict_cmd
from af2jobs.cli import keys as keys_cmd
from af2jobs.cli import serve as serve_cmd

COMMANDS = (predict_cmd, db_cmd, client_cmd, serve_cmd, keys_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="af2", description="AlphaFold2 structure prediction as managed jobs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Af2JobsError as exc:
        print(f"af2: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("af2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
