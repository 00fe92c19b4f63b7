"""Shared fixtures: the small real database (installed by `make db`), and caches shared by the whole session
so that the tiny model compiles and its untrained parameters are generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
# Yeast ubiquitin, 96 % identical to human ubiquitin: 1UBQ is its template. Human ubiquitin is 1UBQ's own sequence,
# which AlphaFold 2.3's template prefilter drops as a copy of the query.
YEAST_UBIQUITIN = "MQIFVKTLTGKTITLEVESSDTIDNVKSKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def demo_db_root() -> Path:
    from af2jobs.settings import Settings

    root = Path(os.environ.get("AF2_TEST_DB_ROOT") or Settings().database_root)
    if not (root / "uniref90" / "uniref90.fasta").is_file():
        pytest.fail(f"the demo database is not installed under {root}: run 'make db' (make test does it)")
    return root


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("af2cache")


@pytest.fixture
def settings_factory(tmp_path, demo_db_root, shared_cache):
    """Settings with a private data dir but the session's database, params and compile caches."""
    from af2jobs.settings import Settings

    def make(**overrides):
        values = {"data_dir": tmp_path / "data", "db_root": demo_db_root, "params_dir": tmp_path / "no-params",
                  "cpus": 2, **overrides}
        s = Settings(**values)
        # Share the slow-to-build caches across tests; the MSA cache stays private to each test.
        for name in ("params-untrained", "jax"):
            link = s.cache_dir / name
            link.parent.mkdir(parents=True, exist_ok=True)
            (shared_cache / name).mkdir(exist_ok=True)
            if not link.exists():
                link.symlink_to(shared_cache / name)
        return s

    return make


# `make test-fast`: the suite without JAX. Modules marked pipeline as a whole are not even imported (an import of
# the pipeline loads JAX); any test that still loads JAX fails the run, so the target keeps its promise.
NO_JAX = "AF2_TEST_NO_JAX"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if os.environ.get(NO_JAX) and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if "pytestmark = pytest.mark.pipeline" in collection_path.read_text(encoding="utf-8"):
            return True
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import sys

    if os.environ.get(NO_JAX) and "jax" in sys.modules:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\n{NO_JAX} is set, but a test loaded JAX: mark it pipeline (pytest -m pipeline runs those)",
              file=sys.stderr)
