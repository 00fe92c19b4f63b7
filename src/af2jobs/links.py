"""Links that work without an API key, for as long as they say: what the mail about a job carries.

A presigned S3 URL dies with the credentials that signed it (a Lambda's session lasts hours, not the day the mail
promises), so the mail links to the API instead: `GET /jobs/<id>/link?path=&expires=&sig=`. The API checks the
signature, then sends the client to a freshly signed URL (AWS) or the file's bytes (the local server), on every
click, until `expires`.

    sig = base64url(HMAC-SHA256(secret, "<job id>\\n<path>\\n<expires>"))   (unpadded)

`path` is relative to the job's directory (as `GET /jobs/<id>/file?path=` takes it); `expires` is a Unix time.
The secret lives in Secrets Manager on AWS and in a file of the data directory locally (wiring.link_signer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from af2jobs import errors

LINK_SECONDS = 7 * 24 * 3600  # what the mail promises, by default: a week
MIN_SECRET_BYTES = 32


def _digest(secret: bytes, job_id: str, path: str, expires: int) -> str:
    mac = hmac.new(secret, f"{job_id}\n{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass(frozen=True)
class LinkSigner:
    """Signs and checks the links of one API (`base_url`: where its routes are, e.g. https://.../v1; empty for a
    signer that only checks, as the API itself on AWS)."""

    secret: bytes
    base_url: str
    seconds: int = LINK_SECONDS

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise errors.ConfigurationError(f"the link secret must be at least {MIN_SECRET_BYTES} bytes")

    def expiry(self, now: float | None = None) -> int:
        return int(now if now is not None else time.time()) + self.seconds

    def url(self, job_id: str, path: str, expires: int) -> str:
        if not self.base_url:
            raise errors.ConfigurationError("links cannot be signed without the API's URL (AF2_API_URL)")
        return (f"{self.base_url.rstrip('/')}/jobs/{job_id}/link?path={quote(path, safe='/')}"
                f"&expires={expires}&sig={_digest(self.secret, job_id, path, expires)}")

    def check(self, job_id: str, path: str, expires: int, sig: str, now: float | None = None) -> None:
        """ForbiddenError unless `sig` is this API's signature of the link and the link has not expired."""
        if not hmac.compare_digest(sig.encode(), _digest(self.secret, job_id, path, expires).encode()):
            raise errors.ForbiddenError("this link is not valid: it was changed, or signed for another file or "
                                        "job", field="sig")
        if (now if now is not None else time.time()) >= expires:
            when = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            raise errors.ForbiddenError(f"this link expired at {when}: fetch the file with your API key "
                                        f"(af2 download {job_id} DIR)", field="expires")


__all__ = ["LINK_SECONDS", "LinkSigner"]
