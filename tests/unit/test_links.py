"""Signed links (af2jobs.links): what the API takes, and everything it refuses."""

from __future__ import annotations

import pytest

from af2jobs import atomic, errors
from af2jobs.links import LinkSigner

SIGNER = LinkSigner(b"s" * 32, "https://api.example.org/v1/", seconds=3600)
JOB = "0" * 32


def _parts(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(url).query))


def test_a_link_names_the_job_and_file_and_checks_until_it_expires():
    url = SIGNER.url(JOB, "output/ubq a/ranked_0.pdb", 2_000_000_000)
    assert url.startswith(f"https://api.example.org/v1/jobs/{JOB}/link?path=output/ubq%20a/ranked_0.pdb&")
    q = _parts(url)
    assert q["expires"] == "2000000000"
    SIGNER.check(JOB, q["path"], int(q["expires"]), q["sig"], now=1_999_999_999)
    with pytest.raises(errors.ForbiddenError, match="expired at 2033-05-18 03:33 UTC"):
        SIGNER.check(JOB, q["path"], int(q["expires"]), q["sig"], now=2_000_000_000)


@pytest.mark.parametrize("field", ["job", "path", "expires", "sig"])
def test_changing_any_part_of_a_link_breaks_it(field):
    q = _parts(SIGNER.url(JOB, "output/a.pdb", 2_000_000_000))
    args = {"job": JOB, "path": q["path"], "expires": int(q["expires"]), "sig": q["sig"]}
    args[field] = {"job": "1" * 32, "path": "output/b.pdb", "expires": args["expires"] + 1,
                   "sig": "A" + args["sig"][1:] if args["sig"][0] != "A" else "B" + args["sig"][1:]}[field]
    with pytest.raises(errors.ForbiddenError, match="not valid"):
        SIGNER.check(args["job"], args["path"], args["expires"], args["sig"], now=0)


def test_expiry_is_the_signers_lifetime_from_now():
    assert SIGNER.expiry(now=1000.7) == 4600


def test_a_short_secret_is_refused():
    with pytest.raises(errors.ConfigurationError, match="at least 32 bytes"):
        LinkSigner(b"short", "https://x")


def test_create_once_keeps_the_first_writers_content(tmp_path):
    path = tmp_path / "d" / "secret"
    assert atomic.create_once(path, b"first") == b"first"
    assert atomic.create_once(path, b"second") == b"first"
    assert path.read_bytes() == b"first" and [p.name for p in path.parent.iterdir()] == ["secret"]
