"""MSA stage against the small real database: real hits, AlphaFold-readable output, cache behaviour."""

from __future__ import annotations

import pytest
from alphafold.data import parsers

from af2jobs import errors
from af2jobs.errors import StageError
from af2jobs.pipeline import databases, msa
from tests.conftest import UBIQUITIN

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def installed(demo_db_root):
    return databases.discover(demo_db_root)


@pytest.fixture(scope="module")
def dbs(installed):
    """What db_preset reduced_dbs searches: UniRef90, MGnify and small BFD, by jackhmmer."""
    return databases.for_preset(installed, "reduced_dbs")


def test_discover_reports_demo_databases(installed):
    by_name = {d.name: d for d in installed}
    assert set(by_name) == {"uniref90", "mgnify", "small_bfd", "bfd", "uniref30", "pdb70", "pdb_mmcif", "pdb_seqres",
                            "uniprot", "mmseqs_uniref", "mmseqs_env"}
    assert by_name["uniprot"].tool == "jackhmmer" and by_name["uniprot"].sequences == 20000
    assert by_name["mmseqs_uniref"].tool == by_name["mmseqs_env"].tool == "mmseqs"
    assert by_name["mmseqs_uniref"].path.name == "uniref" and by_name["mmseqs_uniref"].version.startswith("demo:")
    assert by_name["bfd"].tool == by_name["uniref30"].tool == "hhblits"
    assert by_name["uniref90"].sequences == 20000
    assert by_name["small_bfd"].sequences == 45
    assert by_name["uniref90"].version.startswith("debian:mmseqs2-examples=")


def test_search_writes_alphafold_layout_with_real_hits(dbs, tmp_path):
    events = []
    report = msa.run_msa(UBIQUITIN, dbs, tmp_path / "msas", cpus=2, cache_root=None,
                         progress=lambda db, event, d: events.append((db, event)))
    uniref = parsers.parse_stockholm((tmp_path / "msas" / "uniref90_hits.sto").read_text())
    # AlphaFold's parser takes the first row as the query: it must be ours, not the first hit.
    assert uniref.sequences[0] == UBIQUITIN
    assert len(uniref.sequences) > 10
    assert all(len(s) == len(UBIQUITIN) for s in uniref.sequences)
    assert {s.database for s in report.searches} == {"uniref90", "mgnify", "small_bfd", "pdb70"}  # pdb70: templates
    assert ("uniref90", "start") in events and ("uniref90", "done") in events
    globins = parsers.parse_stockholm((tmp_path / "msas" / "small_bfd_hits.sto").read_text())
    assert globins.sequences == [UBIQUITIN]  # ubiquitin has no globin homologue: the query alone


def test_globin_query_finds_globins(dbs, tmp_path):
    hbb = ("MVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLSTPDAVMGNPKVKAHGKKVLGAFSDGLAHLDNLKGTFATLSELHCDKLHV"
           "DPENFRLLGNVLVCVLAHHFGKEFTPPVQAAYQKVVAGVANALAHKYH")
    msa.run_msa(hbb, dbs, tmp_path / "msas", cpus=2)
    globins = parsers.parse_stockholm((tmp_path / "msas" / "small_bfd_hits.sto").read_text())
    assert len(globins.sequences) >= 40
    assert globins.sequences[0] == hbb


def test_second_search_is_a_cache_hit_with_identical_files(dbs, tmp_path):
    cache = tmp_path / "cache"
    first = msa.run_msa(UBIQUITIN, dbs, tmp_path / "a", cpus=2, cache_root=cache)
    second = msa.run_msa(UBIQUITIN, dbs, tmp_path / "b", cpus=2, cache_root=cache)
    assert (first.cache, second.cache) == ("miss", "hit")
    for name in ("uniref90_hits.sto", "small_bfd_hits.sto"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cache_key_changes_with_database_identity(dbs):
    changed = [databases.Database(d.name, d.path, d.tool, d.version + "-new", d.size_bytes, d.sequences) for d in dbs]
    assert msa.cache_key(UBIQUITIN, dbs) != msa.cache_key(UBIQUITIN, changed)
    assert msa.cache_key(UBIQUITIN, dbs) != msa.cache_key(UBIQUITIN[:-1], dbs)


def test_each_db_preset_searches_alphafolds_databases_and_says_what_is_missing(installed):
    # Each with HHsearch of pdb70 for the templates.
    assert {d.name for d in databases.for_preset(installed, "full_dbs")} == {"uniref90", "mgnify", "bfd", "uniref30",
                                                                             "pdb70"}
    assert {d.name for d in databases.for_preset(installed, "reduced_dbs")} == {"uniref90", "mgnify", "small_bfd",
                                                                                "pdb70"}
    without_hhblits = [d for d in installed if d.tool != "hhblits"]
    with pytest.raises(errors.DatabaseError, match="db_preset full_dbs searches uniref90, mgnify, bfd, uniref30, "
                                                   "pdb70, pdb_mmcif, and bfd, uniref30 are not installed .* use "
                                                   "db_preset reduced_dbs"):
        databases.for_preset(without_hhblits, "full_dbs")
    with pytest.raises(errors.DatabaseError, match="no sequence database"):
        databases.for_preset([], "reduced_dbs")


@pytest.mark.parametrize("missing", ["uniref90", "mgnify", "pdb70", "pdb_mmcif"])
@pytest.mark.parametrize("preset", ["full_dbs", "reduced_dbs"])
def test_a_database_the_preset_names_is_never_left_out_without_a_word(installed, missing, preset):
    """Every database a preset names is searched, or the search is refused naming it (a missing MGnify was
    skipped, and full_dbs searched less than it says)."""
    with pytest.raises(errors.DatabaseError, match=f"and {missing} is not installed"):
        databases.for_preset([d for d in installed if d.name != missing], preset)
    with pytest.raises(errors.DatabaseError, match="msa_mode mmseqs2 searches .* mmseqs_env is not installed"):
        databases.for_mode([d for d in installed if d.name != "mmseqs_env"], "mmseqs2", preset)


def test_no_database_is_a_stage_error(tmp_path):
    with pytest.raises(StageError, match="no sequence database"):
        msa.run_msa(UBIQUITIN, [], tmp_path / "msas", cpus=1)


def test_msa_mode_mmseqs2_searches_the_mmseqs2_databases_and_pdb70_only(installed):
    searched = databases.for_mode(installed, "mmseqs2", "full_dbs")
    assert [d.name for d in searched] == ["mmseqs_uniref", "mmseqs_env", "pdb70"]
    assert [d.name for d in databases.for_mode(installed, "jackhmmer", "reduced_dbs")] == \
        [d.name for d in databases.for_preset(installed, "reduced_dbs")]
    jackhmmer_key = msa.cache_key(UBIQUITIN, databases.for_preset(installed, "reduced_dbs"))
    assert msa.cache_key(UBIQUITIN, searched) != jackhmmer_key  # one cache, the modes' entries apart


def test_a_job_whose_records_all_bring_their_msa_needs_no_database(tmp_path):
    """The stored job keeps its MSAs as files (not on its record): the stages read which records brought one from
    its artifacts, check databases for the others only, and search only those ahead."""
    from af2jobs import layout
    from af2jobs.jobrun import PipelineStages, prepare
    from af2jobs.models import Job, JobState
    from af2jobs.request import JobRequest
    from af2jobs.settings import Settings
    from tests.fakes import MemoryArtifactStore

    seq = UBIQUITIN
    request = JobRequest.parse({"fasta": "two", "sequence": f">own\n{seq}\n>searched\n{seq[:50]}\n",
                                "msa": {"own": f">own\n{seq}\n"}})
    records = request.records()
    stored = request.model_copy(update={"msa": None})  # as the service stores it
    job = Job(owner="ann", request=stored, state=JobState.VALIDATING,
              artifacts={layout.supplied_msa_name("own", "a3m"): "jobs/x/supplied/own.a3m"})
    store = MemoryArtifactStore()
    store.put_bytes("jobs/x/supplied/own.a3m", f">own\n{seq}\n".encode())
    stages = PipelineStages(Settings(data_dir=tmp_path, db_root=tmp_path / "no-databases"), {"profile": "tiny"})
    with pytest.raises(StageError, match="no sequence database"):  # the record without its own MSA needs one
        prepare(stages, store, job, records, progress=lambda *a: None, should_cancel=lambda: False)
    own_only = job.model_copy(update={"request": JobRequest.parse({"fasta": "one", "sequence": f">own\n{seq}\n"})})
    prepared = prepare(stages, store, own_only, records[:1], progress=lambda *a: None, should_cancel=lambda: False)
    assert prepared.supplied == {"own": ("a3m", f">own\n{seq}\n".encode())}
    assert prepared.searches_ahead == []
