"""af2jobs predicts what AlphaFold's own code predicts: for the same raw features, parameters and seed, af2jobs'
Predictor (its own recycling loop, host-side feature slicing, host-drawn key chain, MSA caps fitted to the depth,
best's screen-then-resume) gives the structure and scores of alphafold.model.model.RunModel's process_features +
predict, model by model, on the tiny configuration in float32.

Inputs: yeast ubiquitin with its demo-database MSA (20 rows) and its real template (1UBQ, so model_1 runs the
template stack on real coordinates), and the L29/L35 heterodimer of test_multimer (its features.pkl). Untrained
parameters of the official shapes; AlphaFold's RunModel gets the very dict af2jobs' ParamsProvider hands out.

Tolerances. Both sides run the same model code, traced to the same computation, compiled by the same XLA on the
same CPU, so they are expected to agree bit for bit, and they do: every difference below measured 0.0 (positions,
pLDDT, PAE, pTM, ipTM; the fitted-caps run too). The bounds leave room only for float32 re-association in the last
bits, should a JAX or XLA upgrade compile the two traces apart:
  - atom positions (float32 outputs): 1e-3 A;
  - pLDDT, PAE, pTM, ipTM: alphafold-colabfold returns them as float16 (its _cast_result, in both paths), where a
    last-bit float32 change can show as one float16 step (2**-10 relative: 0.03-0.06 at pLDDT 32-100), so the bound
    is that step plus 1e-2 pLDDT, 1e-2 A PAE, 1e-3 pTM and ipTM.
A real difference is far above them: features processed under another seed (another MSA sample and BERT mask)
move the atoms by ~10 A and pLDDT by ~0.5 even with untrained weights (test_the_tolerance_tells_a_seed_apart).

Cost: 8 compiles of the tiny model (af2jobs' executable and AlphaFold's own jit for each of model_1, model_3, model_1
at the fitted caps and the complex's model_1), 4-7 s each on an idle core, and 3 sets of untrained parameters
generated (~30 s) unless an earlier test of the session made them: about 100 s alone on 2 cores.
"""

from __future__ import annotations

import pickle
from datetime import date

import numpy as np
import pytest

from af2jobs.pipeline import databases, features, msa, params, templates
from af2jobs.pipeline.compiled import enable_compilation_cache
from af2jobs.pipeline.predict import Predictor
from af2jobs.pipeline.results import ModelRun
from af2jobs.runconfig import RunConfig, fit_msa_caps
from tests.conftest import YEAST_UBIQUITIN

pytestmark = pytest.mark.pipeline

MODELS = ("model_1", "model_3")  # a template model and a template-free one
CAPS = (16, 32)  # below the MSA's depth (20 rows): both models sample centres and cluster the other rows
POSITIONS_ATOL = 1e-3  # A
PLDDT_ATOL = 1e-2
PAE_ATOL = 1e-2  # A
SCORE_ATOL = 1e-3  # pTM, ipTM
F16_STEP = 2.0 ** -10  # relative spacing of float16, the dtype of the confidence outputs


@pytest.fixture(scope="module")
def raw_features(demo_db_root, tmp_path_factory):
    """Yeast ubiquitin's features as af2jobs' MSA and template stages make them (reduced_dbs; 1UBQ as template)."""
    msa_dir = tmp_path_factory.mktemp("msas")
    installed = databases.discover(demo_db_root)
    msa.run_msa(YEAST_UBIQUITIN, databases.for_preset(installed, "reduced_dbs"), msa_dir, cpus=2)
    mmcif = next(d for d in installed if d.name == "pdb_mmcif").path
    template_feats, used = templates.featurize(YEAST_UBIQUITIN, msa_dir, mmcif, date(2021, 11, 1), None)
    assert used and used[0]["pdb_id"] == "1ubq"
    return features.build_features(YEAST_UBIQUITIN, "yeast_ubiquitin", msa_dir, template_feats)


@pytest.fixture(scope="module")
def provider(tmp_path_factory, shared_cache):
    enable_compilation_cache(shared_cache / "jax")
    return params.ParamsProvider(tmp_path_factory.mktemp("no-params"), shared_cache / "params-untrained")


def _run(**overrides) -> RunConfig:
    """The run compared: float32, every recycle (tolerance 0), no length padding, the caps as given."""
    values = {"profile": "tiny", "model_names": MODELS, "strategy": "all", "num_recycle": 1, "bfloat16": False,
              "fit_msa_to_depth": False, "length_buckets": False, "recycle_tolerance": 0.0,
              "max_msa_clusters": CAPS[0], "max_extra_msa": CAPS[1], **overrides}
    return RunConfig(**values)


def alphafold_config(name: str, run: RunConfig):
    """The configuration run_alphafold builds for this model (alphafold.model.config.model_config, one ensemble),
    with the run's caps, recycles and precision in AlphaFold's own keys, shrunk as the tiny profile shrinks it."""
    from alphafold.model import config as af_config

    cfg = af_config.model_config(run.variant(name))
    evo = cfg.model.embeddings_and_evoformer
    evo.evoformer_num_block = 1
    evo.extra_msa_stack_num_block = 1
    evo.template.template_pair_stack.num_block = 1
    cfg.model.heads.structure_module.num_layer = 2
    cfg.model.num_recycle = run.num_recycle
    cfg.model.recycle_early_stop_tolerance = run.recycle_tolerance
    cfg.model.global_config.bfloat16 = run.bfloat16
    if run.multimer:
        evo.num_msa, evo.num_extra_msa = min(evo.num_msa, run.max_msa_clusters), min(evo.num_extra_msa,
                                                                                     run.max_extra_msa)
    else:
        cfg.data.eval.num_ensemble = 1
        cfg.data.eval.max_msa_clusters = run.max_msa_clusters
        cfg.data.common.max_extra_msa = run.max_extra_msa
        cfg.data.common.num_recycle = run.num_recycle
    return cfg


class AlphaFold:
    """AlphaFold's own RunModel: process_features, then predict (its recycling loop, its key splits). One runner
    per model configuration, kept for each seed and test that uses it (run_alphafold too gives each of a model's
    predictions the same runner); results memoised, so `all` and `best` compare with the same runs."""

    def __init__(self, provider: params.ParamsProvider) -> None:
        self.provider = provider
        self._runners: dict[tuple, object] = {}
        self._results: dict[tuple, tuple[dict, int]] = {}

    def predict(self, name: str, run: RunConfig, raw: dict, seed: int | None = None) -> tuple[dict, int]:
        from alphafold.model import model as af_model

        seed = run.random_seed if seed is None else seed
        cfg = alphafold_config(name, run)
        key = (run.variant(name), cfg.to_json(sort_keys=True))
        if key not in self._runners:
            all_params, _ = self.provider.get(run.variant(name), run.profile)  # the dict af2jobs selects from
            self._runners[key] = af_model.RunModel(cfg, all_params)
        if (key, seed, id(raw)) not in self._results:
            runner = self._runners[key]
            with params.INPUT_PIPELINE:  # the input pipeline keeps its seeds in module globals; a preload uses it
                feat = runner.process_features(raw, random_seed=seed)
            self._results[key, seed, id(raw)] = runner.predict(feat, random_seed=seed)
        return self._results[key, seed, id(raw)]


@pytest.fixture(scope="module")
def alphafold(provider) -> AlphaFold:
    return AlphaFold(provider)


def deviations(a: dict, b: dict) -> dict[str, float]:
    """The largest differences between two results (and the mean pLDDT one)."""
    def diff(x, y):
        return np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))

    out = {
        "positions_A": float(diff(a["structure_module"]["final_atom_positions"],
                                  b["structure_module"]["final_atom_positions"]).max()),
        "plddt_max": float(diff(a["plddt"], b["plddt"]).max()),
        "plddt_mean": float(diff(a["plddt"], b["plddt"]).mean()),
        "pae_A": float(diff(a["predicted_aligned_error"], b["predicted_aligned_error"]).max()),
        "ptm": float(diff(a["ptm"], b["ptm"])),
    }
    if "iptm" in b:
        out["iptm"] = float(diff(a["iptm"], b["iptm"]))
    return out


def assert_same_prediction(ours: ModelRun, theirs: dict) -> None:
    a, b = ours.result, theirs
    label = ours.model
    np.testing.assert_array_equal(a["structure_module"]["final_atom_mask"], b["structure_module"]["final_atom_mask"])
    np.testing.assert_allclose(a["structure_module"]["final_atom_positions"],
                               b["structure_module"]["final_atom_positions"], rtol=0, atol=POSITIONS_ATOL,
                               err_msg=f"{label}: atom positions")
    for key, atol in (("plddt", PLDDT_ATOL), ("predicted_aligned_error", PAE_ATOL), ("ptm", SCORE_ATOL),
                      ("iptm", SCORE_ATOL)):
        if key in b:
            np.testing.assert_allclose(np.asarray(a[key], np.float32), np.asarray(b[key], np.float32),
                                       rtol=F16_STEP, atol=atol, err_msg=f"{label}: {key}")
    assert ours.mean_plddt == pytest.approx(float(b["mean_plddt"]), rel=F16_STEP, abs=PLDDT_ATOL)
    assert ours.ranking_confidence == pytest.approx(float(b["ranking_confidence"]), rel=F16_STEP, abs=PLDDT_ATOL)


@pytest.mark.parametrize("run", [_run(), _run(model_preset="multimer")],
                         ids=["monomer_ptm", "multimer"])
def test_the_runtime_configuration_is_alphafolds_with_the_runs_settings(run):
    """What af2jobs runs a model with is AlphaFold's own configuration plus the run's settings, key for key: the
    reference below may then be built from AlphaFold's config alone."""
    for name in MODELS:
        assert params.runtime_config(name, run).to_dict() == alphafold_config(name, run).to_dict()


def test_each_model_predicts_what_alphafolds_runmodel_predicts(raw_features, provider, alphafold):
    run = _run()
    assert raw_features["msa"].shape[0] > CAPS[0]  # more rows than cluster centres: the input pipeline clusters
    prediction = Predictor(run, provider).predict(raw_features)
    assert prediction.msa_caps == CAPS  # nothing fitted: AlphaFold's caps
    assert [r.model for r in prediction.runs] == list(MODELS)
    for ours in prediction.runs:
        theirs, recycles = alphafold.predict(ours.base_model, run, raw_features)
        assert ours.phase == "full" and ours.recycles == recycles == run.num_recycle
        assert ours.params.untrained
        assert_same_prediction(ours, theirs)


def test_the_tolerance_tells_a_seed_apart(raw_features, alphafold):
    """The bounds are not loose: another seed's features (another MSA sample and BERT mask) move the atoms far past
    them, even with untrained weights."""
    run = _run()
    for name in MODELS:
        same, _ = alphafold.predict(name, run, raw_features)
        other, _ = alphafold.predict(name, run, raw_features, seed=run.random_seed + 1)
        moved = deviations(same, other)
        assert moved["positions_A"] > 10 * POSITIONS_ATOL, moved


def test_best_names_a_winner_whose_structure_is_alphafolds_run_of_it(raw_features, provider, alphafold):
    """best screens each model for one iteration, then goes on from the winner's screen for the other recycles:
    the winner's structure is AlphaFold's full run of that model."""
    run = _run(strategy="best")
    prediction = Predictor(run, provider).predict(raw_features)
    screens = [r for r in prediction.runs if r.phase == "screen"]
    (winner,) = prediction.ranked
    assert [r.model for r in screens] == list(MODELS)
    assert winner.phase == "full" and winner.model == max(screens, key=lambda r: r.ranking_confidence).model
    theirs, recycles = alphafold.predict(winner.base_model, run, raw_features)  # the same model, seed and caps
    assert winner.recycles == recycles == run.num_recycle
    assert_same_prediction(winner, theirs)


FITTED_FROM = (128, 256)  # caps well above the MSA's depth, which fitting lowers to a step above it


def test_caps_fitted_to_the_depth_predict_what_alphafold_predicts_at_the_unfitted_caps(raw_features, provider,
                                                                                       alphafold):
    """af2jobs' default: caps an MSA does not fill are lowered to a step above its depth (RunConfig.fitted_to), on
    the claim that the rows AlphaFold pads are masked out and the model computes the same. AlphaFold runs at the
    caps the user asked for. Measured: identical to the last bit on this CPU (0.0 A, 0.0 pLDDT); the bounds are
    the same as for the unfitted runs."""
    run = _run(model_names=("model_1",), fit_msa_to_depth=True, max_msa_clusters=FITTED_FROM[0],
               max_extra_msa=FITTED_FROM[1])
    depth = raw_features["msa"].shape[0]
    fitted = fit_msa_caps(depth, *FITTED_FROM)
    assert fitted[0] < FITTED_FROM[0] and fitted[1] < FITTED_FROM[1]  # both caps lowered: fewer padded rows
    prediction = Predictor(run, provider).predict(raw_features)
    assert prediction.msa_caps == fitted
    assert prediction.features["msa_feat"].shape[1] == fitted[0] - 4  # model_1 gives 4 rows to templates
    (ours,) = prediction.runs
    theirs, recycles = alphafold.predict("model_1", run, raw_features)  # the run's own caps: AlphaFold fits nothing
    assert ours.recycles == recycles
    assert_same_prediction(ours, theirs)


# run_alphafold's seeds for a complex: one runner per (model, prediction), in that order; runner i of n predicts
# with seed i + random_seed * n.
def _run_alphafold_seeds(run: RunConfig) -> dict[str, int]:
    runners = [run.prediction_name(m, i) for m in run.model_names for i in range(run.seeds)]
    return {name: i + run.random_seed * len(runners) for i, name in enumerate(runners)}


def test_a_complex_predicts_what_alphafold_multimers_runmodel_predicts(settings_factory, provider, alphafold):
    """Each seed of a complex, with run_alphafold's seeds. Here the host-drawn key chain is what is compared: the
    multimer model samples its MSA from each recycle's key (a monomer's apply ignores its key in inference, its
    sampling is done by the input pipeline); a chain drawn for the wrong seed moved a small complex's atoms by 7.6 A."""
    from af2jobs.pipeline import multimer
    from af2jobs.pipeline.context import Context
    from tests.pipeline.test_multimer import L29, L35, _complex

    run = _run(model_preset="multimer", db_preset="reduced_dbs", model_names=("model_1",),
               num_multimer_predictions_per_model=2, random_seed=1, models_to_relax="none")
    settings = settings_factory()
    ctx = Context(settings=settings, run=run, provider=provider)
    record = _complex("pair", L29, L35)
    workdir = settings.data_dir / "pair"
    multimer.msa_stage(record, workdir, ctx, {})
    raw = pickle.loads((workdir / "features.pkl").read_bytes())  # what the GPU stage reads
    # RunModel.predict starts from all_atom_positions when the features have them: AlphaFold-Multimer's are zeros,
    # the zero state af2jobs starts from.
    assert not np.asarray(raw.get("all_atom_positions", 0)).any()
    prediction = Predictor(run, provider).predict(raw)
    seeds = _run_alphafold_seeds(run)
    assert [r.model for r in prediction.runs] == list(seeds)
    for ours in prediction.runs:
        assert ours.seed == seeds[ours.model]
        theirs, recycles = alphafold.predict("model_1", run, raw, seed=ours.seed)
        assert ours.recycles == recycles == run.num_recycle
        assert ours.iptm is not None
        assert_same_prediction(ours, theirs)
