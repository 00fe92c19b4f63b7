"""Load on a real `af2 serve --cpu-workers 0` (tests/reliability/loadgen.py): submissions from 20 concurrent
clients, with lists, cancels, deletes and repeated Idempotency-Keys among them, then a read phase of gets and lists.
No job lost or duplicated, no 5xx, every status one the OpenAPI document gives, every read answered with the job or
the owner's jobs it asked for. `make test` runs 300 submissions; `make reliability` runs 1,000. Speed is measured by
the same driver (docs/reliability.md, section 2), not asserted here."""

from __future__ import annotations

import pytest

from tests.reliability import loadgen

CLIENTS = 20
READS = 400  # GET /jobs/{id}, and as many GET /jobs, after the submissions


def assert_holds(figures: dict) -> None:
    c = figures["counts"]
    assert figures["errors"] == [], figures["errors"]
    assert c["submitted_201"] == figures["submissions"]
    assert c["lost_from_listing"] == c["lost_from_database"] == c["unexpected_jobs"] == 0, c
    assert c["listed_jobs"] == c["database_jobs"] == c["expected_jobs"] == c["jobs_created"] - c["deleted"], c
    assert c["duplicated_ids"] == c["duplicated_by_key"] == 0, c
    assert c["idempotency_keys"] > 0 and c["deleted"] > 0
    assert c["status_5xx"] == c["undocumented"] == c["cancelled_not_cancelled"] == 0, c
    assert figures["latency"]["list"]["n"] > 0 and figures["latency"]["cancel"]["n"] > 0
    assert figures["reads"]["get"]["n"] == figures["reads"]["list"]["n"] == READS, figures["reads"]
    assert figures["server_exit_code"] == 0  # SIGTERM after the load: a clean shutdown


def test_300_submissions_from_20_clients_lose_and_duplicate_nothing(tmp_path):
    figures = loadgen.run(300, CLIENTS, tmp_path, READS)
    print(loadgen.report(figures))
    assert_holds(figures)


@pytest.mark.reliability_long
def test_1000_submissions_from_20_clients_lose_and_duplicate_nothing(tmp_path):
    figures = loadgen.run(1000, CLIENTS, tmp_path, READS)
    print(loadgen.report(figures))
    assert_holds(figures)
