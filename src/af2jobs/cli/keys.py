"""`af2 keys create|list|revoke`: API keys of this machine's server (AF2_DATA_DIR), or of AWS with AF2_MODE=aws."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from af2jobs import wiring
from af2jobs.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    ks = p.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create_p = ks.add_parser("create", help="create a key and print it (the only time it is ever shown)")
    create_p.add_argument("--owner", required=True, help="who the key acts for; jobs belong to their owner")
    create_p.add_argument("--admin", action="store_true", help="the key sees and acts on every owner's jobs")
    create_p.set_defaults(func=create)
    list_p = ks.add_parser("list", help="list keys (ids, owners, admin, created, revoked; never the secrets)")
    list_p.add_argument("--owner", help="only this owner's keys")
    list_p.set_defaults(func=list_keys)
    revoke_p = ks.add_parser("revoke", help="revoke a key by its id (as `af2 keys list` shows it)")
    revoke_p.add_argument("key_id")
    revoke_p.set_defaults(func=revoke)


def create(args: argparse.Namespace) -> int:
    key = wiring.key_store(Settings()).create(args.owner, admin=args.admin)
    key_id = key.split("_", 2)[1]  # keys are af2_<id>_<secret>
    # The key alone on stdout, so that KEY=$(af2 keys create --owner alice) works; the advice on stderr.
    print(key)
    role = "admin " if args.admin else ""
    print(f"Created {role}key {key_id} for {args.owner}. It is stored only as a hash and cannot be shown again: "
          f"keep it now. Send it in the Authorization header, or set AF2_API_KEY for the af2 client.",
          file=sys.stderr)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    keys = wiring.key_store(Settings()).list(owner=args.owner)
    table = Table(title=f"{len(keys)} API key(s)")
    for column in ("key id", "owner", "admin", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.key_id, k.owner, "yes" if k.admin else "", k.created_at, k.revoked_at or "")
    Console(width=200).print(table)
    return 0


def revoke(args: argparse.Namespace) -> int:
    wiring.key_store(Settings()).revoke(args.key_id)  # NotFoundError (exit 1) names an unknown id
    print(f"Revoked key {args.key_id}.")
    return 0
