"""The long reliability tests (marker reliability_long) run only when asked for: `make reliability`, which is
`pytest -m reliability_long tests/reliability`. `make test` reports them as skipped."""

from __future__ import annotations

import pytest

LONG = "reliability_long"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason=f"long: run with `make reliability` (pytest -m {LONG} tests/reliability)")
    for item in items:
        if item.get_closest_marker(LONG) is not None:
            item.add_marker(skip)
