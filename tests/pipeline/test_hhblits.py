"""The HHblits path (BFD + UniRef30, AlphaFold's own HHBlits wrapper) against tiny HH-suite databases.

The databases are built here with HH-suite's own tools (Debian package hhsuite, installed by `make test`) from the
demo database's 45 globins: one single-sequence a3m per globin, then ffindex_build, hhmake and cstranslate, the
steps that make BFD and UniRef30. "bfd" holds the first half of the globins and "uniref30" the second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alphafold.data import parsers

from af2jobs.pipeline import databases, features, hhsuitedb, msa

pytestmark = pytest.mark.pipeline


def _build(prefix: Path, records: list[tuple[str, str]]) -> None:
    """An HH-suite database with one single-sequence MSA per record."""
    hhsuitedb.build(prefix, ((name, f">{name}\n{seq}\n") for name, seq in records))


@pytest.fixture(scope="module")
def globins(demo_db_root) -> list[tuple[str, str]]:
    return databases.read_fasta(demo_db_root / "small_bfd" / "bfd-first_non_consensus_sequences.fasta")


@pytest.fixture(scope="module")
def hh_root(tmp_path_factory, demo_db_root, globins) -> Path:
    """uniref90 from the demo database, and tiny bfd and uniref30 HH-suite databases (no small_bfd)."""
    if shutil.which("hhblits") is None:
        pytest.fail("hhblits is missing: run `make test`, which installs the Debian package hhsuite")
    root = tmp_path_factory.mktemp("hh-db")
    (root / "uniref90").symlink_to(demo_db_root / "uniref90", target_is_directory=True)
    half = len(globins) // 2
    _build(root / "bfd" / "tiny_bfd", globins[:half])
    _build(root / "uniref30" / "tiny_uniref30", globins[half:])
    return root


def test_discover_finds_both_hhsuite_databases(hh_root):
    by_name = {d.name: d for d in databases.discover(hh_root)}
    assert set(by_name) == {"uniref90", "bfd", "uniref30"}
    assert by_name["bfd"].tool == by_name["uniref30"].tool == "hhblits"
    assert by_name["bfd"].path == hh_root / "bfd" / "tiny_bfd"


def test_hhblits_finds_globins_in_both_databases_and_features_use_them(hh_root, globins, tmp_path):
    name, query = next(g for g in globins if g[0] == "MYG_HORSE")
    dbs = databases.discover(hh_root)
    report = msa.run_msa(query, dbs, tmp_path / "msas", cpus=2)
    hh = next(s for s in report.searches if s.database == "bfd_uniref")

    a3m = parsers.parse_a3m((tmp_path / "msas" / "bfd_uniref_hits.a3m").read_text())
    assert a3m.sequences[0] == query  # the query leads, as AlphaFold's parsers expect
    assert all(len(s) == len(query) for s in a3m.sequences)
    hit_names = {d.split()[0] for d in a3m.descriptions[1:]}
    half = len(globins) // 2
    assert hit_names & {n for n, _ in globins[:half]} and hit_names & {n for n, _ in globins[half:]}
    assert hh.hits == len(a3m.sequences) - 1 > 10

    # Without the HH-suite databases the same query finds only what uniref90 holds.
    plain = [d for d in dbs if d.tool == "jackhmmer"]
    msa.run_msa(query, plain, tmp_path / "plain", cpus=2)
    with_hh = features.build_features(query, name, tmp_path / "msas")
    without = features.build_features(query, name, tmp_path / "plain")
    assert with_hh["msa"].shape[0] >= without["msa"].shape[0] + 10
