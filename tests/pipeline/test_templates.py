"""Templates as AlphaFold 2.3 makes them, on the demo's tiny template database of real PDB entries: HHsearch of the
UniRef90 MSA against pdb70, featurisation from pdb_mmcif with max_template_date and obsolete.dat honoured, and the
runtime configurations that use them (models 1 and 2) or not (3, 4 and 5)."""

from __future__ import annotations

import shutil
from datetime import date
from importlib import resources

import pytest
from alphafold.data import parsers

from af2jobs import errors
from af2jobs.fasta import parse_fasta
from af2jobs.pipeline import databases, features, msa, params, templates
from af2jobs.runconfig import RunConfig
from tests.conftest import UBIQUITIN

pytestmark = pytest.mark.pipeline

# Yeast ubiquitin: 96% identical to human ubiquitin (1UBQ, released 1987-04-16), so 1UBQ chain A is its template.
YEAST = parse_fasta(resources.files("af2jobs.examples").joinpath("yeast_ubiquitin.fasta").read_bytes())[0].sequence
RELEASED_1UBQ = date(1987, 4, 16)


@pytest.fixture(scope="module")
def installed(demo_db_root):
    return databases.discover(demo_db_root)


@pytest.fixture(scope="module")
def searched(installed, tmp_path_factory):
    """The MSA stage of yeast ubiquitin (reduced_dbs): its UniRef90 MSA, then HHsearch of it against pdb70."""
    msa_dir = tmp_path_factory.mktemp("msas")
    report = msa.run_msa(YEAST, databases.for_preset(installed, "reduced_dbs"), msa_dir, cpus=2)
    return msa_dir, report


@pytest.fixture(scope="module")
def mmcif(installed):
    return next(d for d in installed if d.name == "pdb_mmcif").path


def _featurize(searched, tmp_path, mmcif_dir, when, obsolete=None):
    msa_dir = tmp_path / "msas"
    shutil.copytree(searched[0], msa_dir)
    return templates.featurize(YEAST, msa_dir, mmcif_dir, when, obsolete)


def test_demo_installs_the_template_databases(installed):
    by_name = {d.name: d for d in installed}
    assert by_name["pdb70"].tool == "hhsearch"
    assert by_name["pdb_mmcif"].tool == "mmcif" and by_name["pdb_mmcif"].sequences == 3
    assert by_name["pdb_seqres"].tool == "hmmsearch" and by_name["pdb_seqres"].sequences >= 4
    # Each preset's search ends with HHsearch against pdb70 (part of the MSA stage and of its cache key).
    for preset in ("reduced_dbs", "full_dbs"):
        assert [d.name for d in databases.for_preset(installed, preset)][-1] == "pdb70"


def test_hhsearch_of_the_uniref90_msa_finds_1ubq(searched):
    msa_dir, report = searched
    assert "pdb70" in {s.database for s in report.searches}
    hits = parsers.parse_hhr((msa_dir / templates.HITS_NAME).read_text())
    best = hits[0]
    assert best.name.split()[0] == "1ubq_A"
    assert best.sum_probs > 50 and best.aligned_cols >= 70


def test_the_homologue_is_featurised_as_a_template(searched, mmcif, tmp_path):
    feats, used = _featurize(searched, tmp_path, mmcif, date(2021, 11, 1))
    assert used[0]["pdb_id"] == "1ubq" and used[0]["chain"] == "A"
    assert used[0]["release_date"] == RELEASED_1UBQ.isoformat()
    assert feats["template_domain_names"][0] == b"1ubq_A"
    n = len(used)
    assert feats["template_aatype"].shape == (n, len(YEAST), 22)
    assert feats["template_all_atom_positions"].shape == (n, len(YEAST), 37, 3)
    # 1UBQ covers the whole query: every residue has its CA (atom 1) in the template.
    assert feats["template_all_atom_masks"][0, :, 1].sum() == len(YEAST)
    recorded = templates.used(tmp_path / "msas")
    assert recorded["max_template_date"] == "2021-11-01" and recorded["used"] == used
    assert recorded["hits"] >= 1


def test_a_max_template_date_before_the_release_excludes_it(searched, mmcif, tmp_path):
    feats, used = _featurize(searched, tmp_path, mmcif, date(1987, 1, 1))
    assert "1ubq" not in {u["pdb_id"] for u in used}
    assert b"1ubq_A" not in list(feats["template_domain_names"])
    # The day of its release it is allowed again.
    _, used = _featurize(searched, tmp_path / "again", mmcif, RELEASED_1UBQ)
    assert used[0]["pdb_id"] == "1ubq"


def test_obsolete_entries_are_replaced_as_obsolete_dat_says(searched, mmcif, tmp_path):
    """An entry that pdb70 still names but the PDB has replaced: its structure is read from its successor."""
    moved = tmp_path / "pdb_mmcif" / "mmcif_files"
    moved.mkdir(parents=True)
    for cif in mmcif.glob("*.cif"):
        target = "9ubq.cif" if cif.name == "1ubq.cif" else cif.name
        (moved / target).write_text(cif.read_text().replace("1UBQ", "9UBQ") if target == "9ubq.cif"
                                    else cif.read_text())
    obsolete = tmp_path / "pdb_mmcif" / databases.OBSOLETE
    obsolete.write_text(" LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\n"
                        "OBSLTE    01-JAN-20 1UBQ     9UBQ\n")
    _, used = _featurize(searched, tmp_path, moved, date(2021, 11, 1), obsolete)
    assert used[0]["pdb_id"] == "9ubq"
    # Without obsolete.dat the hit's structure is missing: an error that names it, not a crash.
    with pytest.raises(errors.DatabaseError, match="pdb_mmcif has no 1ubq.cif"):
        _featurize(searched, tmp_path / "without", moved, date(2021, 11, 1), None)


def test_no_hits_file_gives_alphafolds_empty_template_features(tmp_path, mmcif):
    feats, used = templates.featurize(UBIQUITIN, tmp_path, mmcif, date.today(), None)
    assert used == [] and feats["template_aatype"].shape == (0,)
    assert set(feats) == set(templates.empty())


def test_features_carry_the_templates(searched, mmcif, tmp_path):
    template_feats, _ = _featurize(searched, tmp_path, mmcif, date(2021, 11, 1))
    feats = features.build_features(YEAST, "yeast_ubiquitin", tmp_path / "msas", template_feats)
    assert feats["template_domain_names"][0] == b"1ubq_A"
    assert feats["msa"].shape[1] == len(YEAST)


def test_only_pdb70_without_pdb_mmcif_is_an_error_naming_it(installed):
    without = [d for d in installed if d.name != "pdb_mmcif"]
    with pytest.raises(errors.DatabaseError, match="pdb_mmcif is not installed"):
        databases.template_source(without)
    assert databases.template_source([d for d in installed if d.name not in ("pdb70", "pdb_mmcif")]) is None


def test_models_1_and_2_use_templates_and_share_a_configuration_3_to_5_another():
    run = RunConfig(profile="tiny")
    cfgs = {name: params.runtime_config(name, run) for name in ("model_1", "model_2", "model_3", "model_4",
                                                                 "model_5")}
    fps = {name: params.config_fingerprint(cfg) for name, cfg in cfgs.items()}
    assert fps["model_1"] == fps["model_2"]
    assert fps["model_3"] == fps["model_4"] == fps["model_5"]
    assert fps["model_1"] != fps["model_3"]
    for name, cfg in cfgs.items():
        with_templates = name in ("model_1", "model_2")
        assert cfg.model.embeddings_and_evoformer.template.enabled is with_templates
        assert cfg.data.common.use_templates is with_templates


def test_casp14_runs_eight_ensembles_and_the_others_one():
    assert params.runtime_config("model_1", RunConfig(profile="tiny", model_preset="monomer_casp14")) \
        .data.eval.num_ensemble == 8
    assert params.runtime_config("model_1", RunConfig(profile="tiny")).data.eval.num_ensemble == 1


def _hit(name: str, aligned: int, hit_sequence: str, query: str) -> parsers.TemplateHit:
    return parsers.TemplateHit(index=1, name=f"{name} some protein", aligned_cols=aligned, sum_probs=0.2,
                               query=query[:aligned], hit_sequence=hit_sequence,
                               indices_query=list(range(aligned)), indices_hit=list(range(aligned)))


def test_alphafold_2_3s_prefilter_drops_low_coverage_copies_and_short_hits():
    """AlphaFold 2.3 drops a hit covering 10 % of the query or less, a copy of the query over 95 % of its length,
    and one under 10 residues (the fork's featuriser checks the date alone)."""
    query = YEAST  # 76 residues
    hits = [_hit("1low_A", 7, "ACDEFGH", query),                         # 7 of 76 columns: 9.2 %
            _hit("1abc_A", 8, query[:8] + "QWERTYKLMNPQ", query),        # 8 of 76 (10.5 %): kept
            _hit("1dup_A", 93, query, query),                            # the query itself
            _hit("1sht_A", 9, "MQIFVKTL", query)]                        # 8 residues
    kept, skipped = templates.prefilter(hits, query)
    assert [h.name.split()[0] for h in kept] == ["1abc_A"]
    assert any("1low_A" in s and s.endswith("Align ratio: 0.092.") for s in skipped)
    assert any("1dup_A" in s and "exact subsequence" in s for s in skipped)
    assert any("1sht_A" in s and s.endswith("Template too short. Length: 8.") for s in skipped)


def test_a_hit_below_the_coverage_bar_is_not_used(searched, mmcif, tmp_path):
    """1UBQ aligned over 6 of the query's columns, as HHsearch reports a marginal hit: AlphaFold 2.3 uses none."""
    msa_dir = tmp_path / "msas"
    shutil.copytree(searched[0], msa_dir)
    hhr = (msa_dir / templates.HITS_NAME).read_text()
    best = parsers.parse_hhr(hhr)[0]
    assert best.aligned_cols >= 70
    marginal = hhr.replace(f"Aligned_cols={best.aligned_cols}", "Aligned_cols=6", 1)
    (msa_dir / templates.HITS_NAME).write_text(marginal)
    feats, used = templates.featurize(YEAST, msa_dir, mmcif, date(2021, 11, 1), None)
    assert "1ubq" not in {u["pdb_id"] for u in used}
    assert any("1ubq_A did not pass prefilter" in s for s in templates.used(msa_dir)["skipped"])
