"""API keys `af2_<id>_<secret>`: made, parsed and checked one way for every ApiKeyStore (SQLite, DynamoDB).

A store keeps the key id, the owner and a salted scrypt hash of the secret; the plaintext key exists only in the
value `new_key` returns. `secret_matches` compares hashes with hmac.compare_digest, and hashes against a dummy salt
when the key id is unknown, so response times do not tell which key ids exist.

scrypt costs tens of milliseconds and 16 MB a check, which would cap a server at a few dozen requests a second:
once a secret has matched its stored hash, the process remembers a SHA-256 of it beside that stored hash (the
secret is 256 random bits, so a fast hash of it is as good a check), and later requests with the same key skip
scrypt. The store is still read on every check, so a revoked or deleted key stops working at once where the API
checks each request (the local server); on AWS, API Gateway keeps the authorizer's answer for a key
GATEWAY_CACHE_S seconds (template.yaml, ReauthorizeEvery), so there a revoked key stops within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from af2jobs import errors
from af2jobs.models import Principal
from af2jobs.ports import ApiKeyInfo

KEY_PREFIX = "af2"
# How long API Gateway keeps the authorizer's answer for a key (template.yaml, ReauthorizeEvery).
GATEWAY_CACHE_S = 60
# scrypt's interactive-login cost. The secret is 256 random bits, so this guards a leaked database against
# nothing a fast hash would not; it is kept because it costs little (~tens of ms) and ages well. Stored per key
# so it can be raised later without invalidating existing keys.
KDF = "scrypt:16384:8:1"
_KEY_RE = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{20,200}})")
_OWNER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
# An address a mail service takes: local@domain with a dot in the domain, no spaces or control characters.
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+")
MAX_EMAIL = 254


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret: str
    salt: bytes
    hash: bytes
    kdf: str = KDF

    @property
    def text(self) -> str:
        """The key as its owner uses it; nothing stores this."""
        return f"{KEY_PREFIX}_{self.key_id}_{self.secret}"


@dataclass(frozen=True)
class StoredKey:
    """What a store holds of one key (never the secret)."""

    owner: str
    admin: bool
    salt: bytes
    kdf: str
    hash: bytes
    revoked: bool


def check_owner(owner: object) -> None:
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise errors.ValidationError("owner must be 1-200 characters without control characters", field="owner")


def check_email(email: object) -> None:
    if not isinstance(email, str) or len(email) > MAX_EMAIL or not _EMAIL_RE.fullmatch(email):
        raise errors.ValidationError(f"email must be an address like name@example.org (at most {MAX_EMAIL} "
                                     f"characters), not {email!r}", field="email")


def mail_owners(keys: list[ApiKeyInfo], email: str) -> list[str]:
    """The owners whose job mail goes to `email`: those with an unrevoked key that names it (in any case, as SNS
    keeps one subscription per address)."""
    return sorted({k.owner for k in keys if k.email and k.email.lower() == email.lower() and k.revoked_at is None})


def mail_addresses(keys: list[ApiKeyInfo], owner: str) -> list[str]:
    """Where `owner`'s job mail goes: the addresses on their unrevoked keys."""
    return sorted({k.email for k in keys if k.owner == owner and k.email and k.revoked_at is None})


def hash_secret(secret: str, salt: bytes, kdf: str) -> bytes:
    name, n, r, p = kdf.split(":")
    if name != "scrypt":
        raise errors.ConfigurationError(f"unknown key hash {name!r} in the key store")
    return hashlib.scrypt(secret.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=32)


def new_key() -> NewKey:
    """A fresh key id (64 random bits: a store must still refuse to overwrite one), secret (256 bits) and salt."""
    secret, salt = secrets.token_urlsafe(32), secrets.token_bytes(16)
    return NewKey(secrets.token_hex(8), secret, salt, hash_secret(secret, salt, KDF))


def parse(key: object) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key; None for anything else, before any lookup."""
    match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
    return None if match is None else (match.group(1), match.group(2))


_MATCHED_MAX = 10_000
_matched: OrderedDict[tuple[bytes, str, bytes], bytes] = OrderedDict()  # stored (salt, kdf, hash) -> sha256(secret)
_matched_lock = threading.Lock()


def forget_matches() -> None:
    """Forget every secret remembered as matching: the next check of each key runs scrypt again."""
    with _matched_lock:
        _matched.clear()


def secret_matches(secret: str, stored: tuple[bytes, str, bytes] | None) -> bool:
    """Whether the secret hashes to the stored (salt, kdf, hash); None (an unknown key id) costs the same. A secret
    that matched before in this process is checked by its SHA-256 instead of scrypt."""
    if stored is None:
        hash_secret(secret, b"\0" * 16, KDF)
        return False
    fast = hashlib.sha256(secret.encode()).digest()
    with _matched_lock:
        known = _matched.get(stored)
        if known is not None:
            _matched.move_to_end(stored)
    if known is not None and hmac.compare_digest(known, fast):
        return True
    salt, kdf, expected = stored
    if not hmac.compare_digest(hash_secret(secret, salt, kdf), expected):
        return False
    with _matched_lock:
        _matched[stored] = fast
        while len(_matched) > _MATCHED_MAX:
            _matched.popitem(last=False)
    return True


def verify(key: object, find: Callable[[str], StoredKey | None]) -> Principal | None:
    """Who `key` belongs to, from what `find` (a store's lookup by key id) holds of it; None for an unknown, wrong,
    malformed or revoked key. An unknown key id costs the same hashing as a known one."""
    parsed = parse(key)
    if parsed is None:
        return None
    key_id, secret = parsed
    stored = find(key_id)
    if not secret_matches(secret, None if stored is None else (stored.salt, stored.kdf, stored.hash)):
        return None
    return None if stored.revoked else Principal(owner=stored.owner, admin=stored.admin)
