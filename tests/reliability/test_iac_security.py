"""checkov over template.yaml: no failed check, and every skipped one carries its reason in the template.

checkov lives in its own environment (.venv-checkov, made by `make checkov`, which `make test` runs): it pins boto3
and packaging below what aws-sam-cli needs, so it cannot share .venv."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
# The version `make checkov` installs.
VERSION = re.findall(r"^CHECKOV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
MIN_REASON = 40  # characters: a reason, not a placeholder


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV.relative_to(ROOT)} is missing: run 'make checkov' (make test does it)")
    result = subprocess.run(
        [str(CHECKOV), "--file", str(TEMPLATE), "--framework", "cloudformation", "--output", "json", "--compact",
         "--skip-download"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        # Offline: no look-up of a newer checkov on PyPI (--skip-download covers the rest).
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some check failed; reported below
    data = json.loads(result.stdout)
    return data[0] if isinstance(data, list) else data


def test_checkov_is_the_pinned_version(report: dict[str, Any]) -> None:
    assert [report["summary"]["checkov_version"]] == VERSION


def test_template_parses_and_is_checked(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] > 50 and summary["passed"] > 100


def test_no_check_fails(report: dict[str, Any]) -> None:
    failed = [f"{c['check_id']} {c['resource']} ({c['check_name']})" for c in report["results"]["failed_checks"]]
    assert failed == []


def test_every_skip_has_a_reason(report: dict[str, Any]) -> None:
    skipped = report["results"]["skipped_checks"]
    assert skipped  # the skips below are in template.yaml; none is silently dropped
    thin = [
        f"{c['check_id']} {c['resource']}: {c['check_result'].get('suppress_comment')!r}"
        for c in skipped
        if len((c["check_result"].get("suppress_comment") or "").strip()) < MIN_REASON
    ]
    assert thin == []
