"""The owner's fair-share identifier on the Batch queues (af2jobs.awsrun.validate.share_identifier)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from af2jobs.awsrun import validate

# AWS Batch SubmitJob, shareIdentifier: "limited to 255 alphanumeric characters"; a trailing * is a policy prefix.
BATCH_SHARE = re.compile(r"[A-Za-z0-9]{1,255}")
OWNERS = st.text(min_size=1, max_size=200)


@given(OWNERS)
def test_every_owner_gets_an_identifier_batch_accepts_the_same_each_time(owner: str) -> None:
    share = validate.share_identifier(owner)
    assert BATCH_SHARE.fullmatch(share), share
    assert share == validate.share_identifier(owner)
    assert share.startswith(validate.SHARE_PREFIX)


@given(OWNERS, OWNERS)
def test_different_owners_get_different_identifiers(a: str, b: str) -> None:
    assert (validate.share_identifier(a) == validate.share_identifier(b)) == (a == b)


def test_owners_that_a_character_filter_would_merge_stay_apart() -> None:
    """Dropping or replacing what Batch does not allow would make these one share; the hash keeps them apart."""
    owners = ["ann", "ann!", "a-nn", "a_nn", "a nn", "ANN", "ann\u00e9", "x" * 200, "x" * 199 + "y"]
    shares = {validate.share_identifier(o) for o in owners}
    assert len(shares) == len(owners)
    assert all(len(s) == 1 + validate.SHARE_HEX_DIGITS for s in shares)
