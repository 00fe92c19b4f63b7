"""Complexes as AlphaFold-Multimer makes them, on the demo database: per-chain searches (identical chains once, each
chain its own cache entry), UniProt rows paired by species across different chains, hmmsearch templates of
pdb_seqres, the v3 models with seeds ranked by 0.8 ipTM + 0.2 pTM, and chains A, B, ... in the structures."""

from __future__ import annotations

import numpy as np
import pytest

from af2jobs.fasta import complex_record, parse_fasta
from af2jobs.pipeline import multimer, outputs, params
from af2jobs.pipeline.predict import Predictor
from af2jobs.pipeline.context import Context
from af2jobs.runconfig import resolve
from af2jobs.runconfig import RunConfig
from tests.conftest import YEAST_UBIQUITIN

pytestmark = pytest.mark.pipeline

# Ribosomal proteins L29 (Desulfovibrio vulgaris) and L35 (Mycoplasma synoviae), real UniProt entries of the demo
# database: their homologs in it come from species they share, so the two chains' UniProt rows pair.
L29 = "MNAAELRKLSAEQLKDKLAESRKELFDMRFRHATAQLEKTSNLPATKRDIARILTILKEKG"
L35 = "MPKMKTKSALKKRVKVTATGKIKREQAFRSHLAQNKTKKQKRQSRKASFMKRSDFKRFKFML"
# The L29 of another Desulfovibrio: a new partner for L29 in a second complex.
L29_AFRICANUS = "MMKAKEIRDLDAGAMGQKLVDYRKELFNLRFQHATAQLENTQRIKAVRRTIARIETIIQEKTGA"
TINY = {"profile": "tiny", "max_msa_clusters": 16, "max_extra_msa": 32, "num_recycle": 1, "models_to_relax": "none"}


def _complex(name: str, *chains: str):
    text = "".join(f">{name}_{i} chain {i}\n{seq}\n" for i, seq in enumerate(chains))
    return complex_record(parse_fasta(text), name)


@pytest.fixture
def ctx(settings_factory):
    settings = settings_factory()
    run = resolve(settings, gpu=False, model_preset="multimer", db_preset="reduced_dbs", **TINY)
    return Context(settings=settings, run=run)


def _paired_rows(feats: dict) -> int:
    """Rows of the merged MSA with residues in every chain (the query row and the species-paired ones)."""
    mask = feats["msa_mask"] > 0
    aligned = (feats["msa"] != 21) & mask
    chains = [aligned[:, feats["asym_id"] == a].any(axis=1) for a in np.unique(feats["asym_id"])]
    return int(np.logical_and.reduce(chains).sum())


def test_a_heterodimer_searches_both_chains_with_uniprot_and_pairs_rows_by_species(ctx, tmp_path):
    record = _complex("pair", L29, L35)
    timings = multimer.msa_stage(record, tmp_path, ctx, {})

    searched = {s["database"] for s in timings["msa"]["searches"]}
    assert {"A:uniref90", "A:uniprot", "A:pdb_seqres", "B:uniref90", "B:uniprot"} <= searched
    assert "A:pdb70" not in searched  # a complex's templates come from hmmsearch of pdb_seqres
    feats, _ = multimer.build_features(record, tmp_path, ctx)
    assert feats["aatype"].shape == (len(L29) + len(L35),)
    assert sorted(set(feats["asym_id"].astype(int))) == [1, 2] and sorted(set(feats["entity_id"].astype(int))) == [1, 2]
    assert _paired_rows(feats) > 1  # more than the query: UniProt hits of the same species, side by side
    assert (tmp_path / "msas" / multimer.CHAIN_MAP).is_file()


def test_without_uniprot_a_heterodimer_fails_naming_it(ctx, tmp_path):
    from af2jobs.errors import StageError

    ctx.databases = [d for d in ctx.databases if d.name != "uniprot"]
    with pytest.raises(StageError, match="uniprot is not installed"):
        multimer.search(_complex("pair", L29, L35), tmp_path, ctx)


def test_a_homotrimer_searches_once_finds_its_template_by_hmmsearch_and_pairs_nothing(ctx, tmp_path):
    record = _complex("trimer", YEAST_UBIQUITIN, YEAST_UBIQUITIN, YEAST_UBIQUITIN)
    timings = multimer.msa_stage(record, tmp_path, ctx, {})

    assert {s["database"].split(":")[0] for s in timings["msa"]["searches"]} == {"A"}
    assert not any(s["database"].endswith("uniprot") for s in timings["msa"]["searches"])  # homomers do not pair
    assert timings["templates"]["used"] == ["1ubq_A"]
    feats, _ = multimer.build_features(record, tmp_path, ctx)
    assert list(np.unique(feats["entity_id"])) == [1] and sorted(set(feats["sym_id"].astype(int))) == [1, 2, 3]
    assert feats["template_aatype"].shape[1] == 3 * len(YEAST_UBIQUITIN)


def test_a_chain_seen_in_an_earlier_complex_costs_no_search(ctx, tmp_path):
    cached = ctx.settings.cache_dir / "msa"
    multimer.search(_complex("first", L29, L35), tmp_path / "first", ctx)
    entries = sorted(p.name for p in cached.glob("*/*"))
    timings, _ = multimer.search(_complex("second", L29, L29_AFRICANUS), tmp_path / "second", ctx)

    assert [(e["chain"], e["cache"]) for e in timings["entries"]] == [("A", "hit"), ("B", "miss")]
    assert timings["entries"][0]["cache_key"] in entries


def test_seeds_are_run_alphafolds_and_ranking_is_iptm_and_ptm(settings_factory):
    run = RunConfig(model_preset="multimer", model_names=["model_1", "model_3"], num_multimer_predictions_per_model=3,
                    random_seed=2)
    # run_alphafold: model_index over the 6 runners (model_1 pred 0-2, model_3 pred 0-2) + random_seed * 6.
    assert [run.seed_of(m, i) for m in (0, 1) for i in range(3)] == [12, 13, 14, 15, 16, 17]
    assert run.prediction_name("model_3", 2) == "model_3_multimer_v3_pred_2"
    assert params.runtime_config("model_4", run).model.embeddings_and_evoformer.num_extra_msa == 1152
    default = resolve(settings_factory(), gpu=False, model_preset="multimer")
    assert (default.num_recycle, default.recycle_tolerance, default.seeds) == (20, 0.5, 5)


def test_a_complex_predicts_with_chains_ipTM_and_its_seeds(ctx, tmp_path):
    record = _complex("pair", L29, L35)
    multimer.msa_stage(record, tmp_path, ctx, {})
    feats, _ = multimer.build_features(record, tmp_path, ctx)
    run = ctx.run.model_copy(update={"model_names": ("model_1",), "num_multimer_predictions_per_model": 2,
                                     "strategy": "all"})
    prediction = Predictor(run, ctx.provider).predict(feats)

    names = [r.model for r in prediction.ranked]
    assert sorted(names) == ["model_1_multimer_v3_pred_0", "model_1_multimer_v3_pred_1"]
    assert {r.seed for r in prediction.ranked} == {0, 1}
    for r in prediction.ranked:
        assert r.iptm is not None and r.ranking_confidence == pytest.approx(80 * r.iptm + 20 * r.ptm, abs=0.5)
    best = prediction.ranked[0]
    prot = outputs.unrelaxed_protein(best, prediction.features)
    pdb = outputs.pdb_text(prot, ["test"])
    atoms = [line for line in pdb.splitlines() if line.startswith("ATOM")]
    chains = [line[21] for line in atoms]
    assert chains.count("A") > 0 and chains.count("B") > 0 and chains == sorted(chains)
    first_b = next(line for line in atoms if line[21] == "B")
    assert int(first_b[22:26]) == 1  # residues are numbered within each chain
    cif = outputs.cif_text(prot, ["test"], "pair")
    assert "Multimer" in cif
    debug = outputs.ranking_debug(prediction, run.rank_by)
    assert set(debug["iptm+ptm"]) == set(names) and set(debug["iptm"]) == set(names)
