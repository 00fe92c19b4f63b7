"""`af2 keys create|list|revoke`: API keys of this machine's server (AF2_DATA_DIR), or of AWS with AF2_MODE=aws."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from af2jobs import apikeys, wiring
from af2jobs.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    ks = p.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create_p = ks.add_parser("create", help="create a key and print it (the only time it is ever shown)")
    create_p.add_argument("--owner", required=True, help="who the key acts for; jobs belong to their owner")
    create_p.add_argument("--admin", action="store_true", help="the key sees and acts on every owner's jobs")
    create_p.add_argument("--email", help="where the owner's job mail goes (on AWS the address gets a mail from "
                                           "SNS asking to confirm; nothing is delivered until it does)")
    create_p.set_defaults(func=create)
    list_p = ks.add_parser("list", help="list keys (ids, owners, admin, e-mail, created, revoked; never the secrets)")
    list_p.add_argument("--owner", help="only this owner's keys")
    list_p.set_defaults(func=list_keys)
    mail_p = ks.add_parser("mail", help="route an address's job mail again, from the keys that name it "
                                        "(after a failed create or revoke)")
    mail_p.add_argument("--email", required=True)
    mail_p.set_defaults(func=route_mail)
    revoke_p = ks.add_parser("revoke", help="revoke a key by its id (as `af2 keys list` shows it)")
    revoke_p.add_argument("key_id")
    revoke_p.set_defaults(func=revoke)


def create(args: argparse.Namespace) -> int:
    settings = Settings()
    keys = wiring.key_store(settings)
    key = keys.create(args.owner, admin=args.admin, email=args.email)
    key_id = key.split("_", 2)[1]  # keys are af2_<id>_<secret>
    # The key alone on stdout, so that KEY=$(af2 keys create --owner alice) works; the advice on stderr.
    print(key)
    role = "admin " if args.admin else ""
    print(f"Created {role}key {key_id} for {args.owner}. It is stored only as a hash and cannot be shown again: "
          f"keep it now. Send it in the Authorization header, or set AF2_API_KEY for the af2 client.",
          file=sys.stderr)
    return _route_mail(settings, keys, args.email) if args.email else 0


def route_mail(args: argparse.Namespace) -> int:
    apikeys.check_email(args.email)
    settings = Settings()
    return _route_mail(settings, wiring.key_store(settings), args.email)


def _route_mail(settings: Settings, keys, email: str) -> int:
    """Deliver the job mail of the owners whose unrevoked keys name `email` to it (AWS: its SNS subscription)."""
    mail = wiring.owner_mail(settings)
    owners = apikeys.mail_owners(keys.list(), email)
    if mail is None:
        print(f"Job mail of {', '.join(owners) or 'nobody'} goes to {email} (when AF2_SMTP_HOST is set).",
              file=sys.stderr)
        return 0
    try:
        mail.route(email, owners)
    except Exception as exc:  # the key is stored: say so, and how to route its mail once the cause is gone
        print(f"error: the key is saved, but the mail to {email} could not be routed ({exc}); run "
              f"'af2 keys mail --email {email}' again", file=sys.stderr)
        return 1
    what = f"the job mail of {', '.join(owners)}" if owners else "no job mail any more"
    print(f"{email} receives {what}. A new address first gets a mail from AWS asking to confirm the "
          f"subscription; nothing reaches it until it does.", file=sys.stderr)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    keys = wiring.key_store(Settings()).list(owner=args.owner)
    table = Table(title=f"{len(keys)} API key(s)")
    for column in ("key id", "owner", "admin", "email", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.key_id, k.owner, "yes" if k.admin else "", k.email or "", k.created_at, k.revoked_at or "")
    Console(width=200).print(table)
    return 0


def revoke(args: argparse.Namespace) -> int:
    settings = Settings()
    keys = wiring.key_store(settings)
    keys.revoke(args.key_id)  # NotFoundError (exit 1) names an unknown id
    print(f"Revoked key {args.key_id}.")
    email = next((k.email for k in keys.list() if k.key_id == args.key_id), None)
    if email:  # its owner's mail stops going there unless another of their keys names the address
        return _route_mail(settings, keys, email)
    return 0
