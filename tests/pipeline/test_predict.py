"""The real AlphaFold2 model code with the tiny configuration: strategies, ranking, shared compiles, params."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from af2jobs.pipeline import compiled as compiled_mod
from af2jobs.pipeline import devices, features, inputs, msa, params, predict, warmup
from af2jobs.pipeline.keys import key_chain
from af2jobs.runconfig import RunConfig
from tests.conftest import UBIQUITIN

pytestmark = pytest.mark.pipeline

TWO = "model_1,model_3"


@pytest.fixture(scope="module")
def raw_features(demo_db_root, tmp_path_factory):
    from af2jobs.pipeline import databases

    msa_dir = tmp_path_factory.mktemp("msas")
    msa.run_msa(UBIQUITIN, databases.discover(demo_db_root), msa_dir, cpus=2)
    return features.build_features(UBIQUITIN, "ubiquitin", msa_dir)


@pytest.fixture(scope="module")
def provider(tmp_path_factory, shared_cache):
    compiled_mod.enable_compilation_cache(shared_cache / "jax")
    return params.ParamsProvider(tmp_path_factory.mktemp("no-params"), shared_cache / "params-untrained")


def _predict(raw, provider, **kw):
    run = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, **kw)
    return predict.Predictor(run, provider).predict(raw)


def test_features_hold_the_msa(raw_features):
    assert raw_features["msa"].shape[1] == len(UBIQUITIN)
    assert raw_features["msa"].shape[0] > 10
    depth = features.msa_depth(raw_features)
    assert len(depth) == len(UBIQUITIN) and min(depth) >= 1


def test_all_runs_every_model_fully_and_ranks_by_score(raw_features, provider):
    result = _predict(raw_features, provider, model_names="model_1,model_2,model_3", strategy="all")
    assert [r.phase for r in result.runs] == ["full", "full", "full"]
    assert {r.model for r in result.ranked} == {"model_1", "model_2", "model_3"}
    scores = [r.ranking_confidence for r in result.ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(r.recycles == 3 for r in result.ranked)
    # Models 1 and 2 (templates) share one configuration, so one compiled function: model_2 pays no compile.
    # (Model 3's function may be compiled already by an earlier test of the session.)
    assert result.runs[1].compile_s == 0.0


def test_best_screens_every_model_then_recycles_only_the_winner(raw_features, provider):
    result = _predict(raw_features, provider, model_names="model_1,model_2,model_3", strategy="best")
    screens = [r for r in result.runs if r.phase == "screen"]
    full = [r for r in result.runs if r.phase == "full"]
    assert [r.model for r in screens] == ["model_1", "model_2", "model_3"]
    assert all(r.recycles == 0 for r in screens)
    assert len(full) == 1 and full[0].recycles == 3
    assert full[0].model == max(screens, key=lambda r: r.ranking_confidence).model
    assert result.ranked == full


def test_stop_at_score_stops_at_the_first_model_reaching_it(raw_features, provider):
    low = _predict(raw_features, provider, model_names=TWO, strategy="stop-at-score:1")
    assert [r.model for r in low.runs] == ["model_1"]
    unreachable = _predict(raw_features, provider, model_names=TWO, strategy="stop-at-score:100")
    assert [r.model for r in unreachable.runs] == ["model_1", "model_3"]


def test_prediction_is_finite_and_deterministic(raw_features, provider):
    a = _predict(raw_features, provider, model_names="model_3", strategy="all").ranked[0]
    b = _predict(raw_features, provider, model_names="model_3", strategy="all").ranked[0]
    pos = a.result["structure_module"]["final_atom_positions"]
    assert pos.shape == (len(UBIQUITIN), 37, 3) and np.isfinite(pos).all()
    assert np.array_equal(pos, b.result["structure_module"]["final_atom_positions"])
    assert 0 <= a.mean_plddt <= 100 and a.params.untrained


def test_untrained_params_roundtrip_bit_for_bit_in_official_format(tmp_path):
    cfg = params.official_config("model_1_ptm", "tiny")
    generated = params.untrained_params(cfg, "seed")
    path = tmp_path / "params_model_1_ptm.npz"
    params.save_npz(generated, path)
    with np.load(path) as npz:
        keys = list(npz.files)
    assert all("//" in k for k in keys)
    # Official files keep triangle multiplication weights un-fused; the official loader fuses them.
    assert any(k.endswith("left_projection//weights") for k in keys)
    loaded = params.load_npz(path)
    assert loaded.keys() == generated.keys()
    for scope in generated:
        for name, arr in generated[scope].items():
            assert loaded[scope][name].dtype == arr.dtype
            assert np.array_equal(loaded[scope][name], arr), f"{scope}//{name}"
    again = params.untrained_params(cfg, "seed")
    assert all(np.array_equal(again[s][n], generated[s][n]) for s in generated for n in generated[s])


def test_official_params_file_is_preferred_and_identified(tmp_path, shared_cache):
    """A params directory with params_model_3_ptm.npz is used as official, with its checksum."""
    official_dir = tmp_path / "params"
    cfg = params.official_config("model_3_ptm", "full")
    params.save_npz(params.untrained_params(cfg, "stand-in for the official file"), official_dir / "params_model_3_ptm.npz")
    (official_dir / "RELEASE").write_text("alphafold_params_2022-12-06\n")
    provider = params.ParamsProvider(official_dir, tmp_path / "untrained")
    loaded, identity = provider.get("model_3_ptm", "full")
    assert identity.source == "official" and not identity.untrained
    assert identity.release == "alphafold_params_2022-12-06"
    assert len(identity.sha256) == 64
    assert not (tmp_path / "untrained").exists()  # nothing generated
    shapes = params.param_shapes(cfg)
    assert params.select(loaded, shapes).keys() == shapes.keys()


def test_length_buckets_share_a_compile_and_keep_the_result(raw_features, provider):
    from af2jobs.runconfig import bucket_length

    assert [bucket_length(n) for n in (76, 96, 97, 513, 1396, 2500, 4100)] == [96, 96, 128, 576, 1408, 2560, 4608]
    plain = _predict(raw_features, provider, model_names="model_3", strategy="all").ranked[0]
    padded = _predict(raw_features, provider, model_names="model_3", strategy="all", length_buckets=True).ranked[0]
    n = len(UBIQUITIN)
    assert padded.result["plddt"].shape == (n,)
    assert padded.result["predicted_aligned_error"].shape == (n, n)
    assert padded.result["structure_module"]["final_atom_positions"].shape == (n, 37, 3)
    # Padded residues are masked out of the scores: the same model gives the same ranking score, to bf16 rounding.
    assert abs(padded.mean_plddt - plain.mean_plddt) < 0.5
    assert abs(padded.result["plddt"] - plain.result["plddt"]).max() < 0.5


def test_a_nearby_length_in_the_same_bucket_pays_no_compile(provider, tmp_path):
    from af2jobs.pipeline import features as feats

    def raw_for(seq):
        msa_dir = tmp_path / str(len(seq))
        msa_dir.mkdir()
        return feats.build_features(seq, "x", msa_dir)  # no MSA files: the query alone

    _predict(raw_for(UBIQUITIN[:70]), provider, model_names="model_3", length_buckets=True).ranked[0]
    b = _predict(raw_for(UBIQUITIN[:66]), provider, model_names="model_3", length_buckets=True).ranked[0]
    assert b.compile_s == 0.0  # 70 and 66 both run at 96
    assert b.result["plddt"].shape == (66,)


def test_best_goes_on_from_the_winners_screen_and_matches_a_run_from_scratch(raw_features, provider):
    """The screen is the winner's first recycling iteration; going on from it gives the same structure as
    running that model with full recycling from the start, for one iteration less."""
    best = _predict(raw_features, provider, model_names="model_1,model_3", strategy="best")
    winner = best.ranked[0]
    scratch = _predict(raw_features, provider, model_names=winner.model, strategy="all").ranked[0]
    assert winner.recycles == scratch.recycles == 3
    assert np.array_equal(winner.result["structure_module"]["final_atom_positions"],
                          scratch.result["structure_module"]["final_atom_positions"])
    assert np.array_equal(winner.result["plddt"], scratch.result["plddt"])
    assert all(r.state is None for r in best.runs)  # the screens' device memory is released


_TWO_DEVICES = """
import json, pickle, sys
from pathlib import Path
import numpy as np
from af2jobs.pipeline import compiled, params, predict
from af2jobs.runconfig import RunConfig

raw = pickle.loads(Path(sys.argv[1]).read_bytes())
cache = Path(sys.argv[2])
compiled.enable_compilation_cache(cache / "jax")
provider = params.ParamsProvider(cache / "no-params", cache / "params-untrained")
out = {}
for strategy in ("all", "best"):
    for gpus in (1, 2):
        run = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, strategy=strategy, gpus=gpus,
                        model_names="model_1,model_2,model_3")
        result = predict.Predictor(run, provider).predict(raw)
        out[f"{strategy}{gpus}"] = {
            f"{r.model}/{r.phase}": {"device": r.device, "score": r.ranking_confidence,
                                     "ca": np.asarray(r.result["structure_module"]["final_atom_positions"])[:, 1].tolist()}
            for r in result.runs}
import jax
with jax.default_device(jax.devices()[1]):  # a local worker's second GPU slot: best on its own device
    result = predict.Predictor(RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, strategy="best",
                                         model_names="model_1,model_2,model_3"), provider).predict(raw)
out["best_slot1"] = {f"{r.model}/{r.phase}": {"device": r.device} for r in result.runs}
print(json.dumps(out))
"""


def test_all_on_two_devices_runs_models_in_parallel_with_the_same_results(raw_features, shared_cache, tmp_path):
    """Two host devices stand in for two GPUs: the models spread over both and score as on one."""
    import json
    import os
    import pickle
    import subprocess
    import sys

    feats = tmp_path / "raw.pkl"
    feats.write_bytes(pickle.dumps(raw_features))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(feats), str(shared_cache)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = out["all1"], out["all2"]
    assert {r["device"] for r in one.values()} == {"cpu:0"}
    assert {r["device"] for r in two.values()} == {"cpu:0", "cpu:1"}
    assert set(two) == {"model_1/full", "model_2/full", "model_3/full"}
    for model, r in one.items():
        assert two[model]["score"] == pytest.approx(r["score"], abs=1e-4)
        assert np.allclose(two[model]["ca"], r["ca"], atol=1e-3)
    # best: the screens shared across both devices, the same winner recycled to the same structure.
    best1, best2 = out["best1"], out["best2"]
    screens = {k: r for k, r in best2.items() if k.endswith("/screen")}
    assert len(screens) == 3 and {r["device"] for r in screens.values()} == {"cpu:0", "cpu:1"}
    (winner1,) = [k for k in best1 if k.endswith("/full")]
    (winner2,) = [k for k in best2 if k.endswith("/full")]
    assert winner1 == winner2 and np.allclose(best2[winner2]["ca"], best1[winner1]["ca"], atol=1e-3)
    # On a slot's own device every run stays there, the winner's full run (which goes on from its screen) too.
    assert {r["device"] for r in out["best_slot1"].values()} == {"cpu:1"} and len(out["best_slot1"]) == 4


def test_inputs_prepared_on_the_cpus_are_what_the_gpu_stage_uses_with_the_same_result(raw_features, provider,
                                                                                     tmp_path, monkeypatch):
    both = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, model_names=("model_1", "model_3"),
                     length_buckets=True)
    files = inputs.prepare_inputs(both, raw_features, tmp_path / "inputs")
    assert len(files) == 2 and all((tmp_path / "inputs" / f).is_file() for f in files)  # models 1 and 3 differ
    run = both.model_copy(update={"model_names": ("model_3",)})  # one model's prediction is enough to compare
    reference = predict.Predictor(run, provider).predict(raw_features)

    def refuse(*args, **kwargs):
        raise AssertionError("the GPU stage processed features the CPU stage had prepared")

    monkeypatch.setattr(inputs, "process_features", refuse)
    predictor = predict.Predictor(run, provider, inputs_dir=tmp_path / "inputs")
    again = predictor.predict(raw_features)
    assert len(predictor.inputs_used) == 1 and predictor.inputs_used[0] in files
    for a, b in zip(reference.ranked, again.ranked):
        assert a.model == b.model and a.mean_plddt == pytest.approx(b.mean_plddt, abs=1e-6)
    # a run the inputs were not made for (another seed) processes its own: nothing stale is used
    monkeypatch.undo()
    other = predict.Predictor(run.model_copy(update={"random_seed": 1}), provider, inputs_dir=tmp_path / "inputs")
    other.predict(raw_features)
    assert other.inputs_used == []


AWS_NAMES = {"mode": "aws", "jobs_table": "j", "keys_table": "k", "bucket": "b", "topic_arn": "arn:aws:sns:x:1:t",
             "state_machine_arn": "arn:aws:states:x:1:stateMachine:m"}


@pytest.mark.parametrize(("settings", "overrides", "expected"), [
    ({}, {"profile": "tiny", "length_buckets": True}, "its own run"),  # one machine with a GPU: the CPU slot
    ({}, {"profile": "tiny"}, None),  # one machine without a GPU: nothing to hand over
    (AWS_NAMES, {"profile": "tiny"}, "the GPU job's run"),  # the CPU MSA job of a GPU job
], ids=["local-gpu", "local-cpu", "aws-msa-job"])
def test_the_msa_stage_prepares_the_gpus_inputs_where_a_gpu_stage_follows(settings_factory, settings, overrides,
                                                                          expected):
    from af2jobs.jobrun import PipelineStages
    from af2jobs.models import Job
    from af2jobs.request import JobRequest

    from af2jobs.fasta import FastaRecord

    job = Job(owner="ann", request=JobRequest.parse({"fasta": "ubq", "sequence": UBIQUITIN}))
    stages = PipelineStages(settings_factory(**settings), overrides)
    record = FastaRecord(name="ubq", description="", sequence=UBIQUITIN, line=1)
    prepared = stages.prepare(job, [record], {}, progress=lambda *a: None, should_cancel=lambda: False)
    inputs = prepared.context.inputs_run
    if expected is None:
        assert inputs is None
    elif expected == "its own run":
        assert inputs == prepared.run_config
    else:  # what the GPU job will resolve: buckets on, full MSA depth, the same tiny profile
        assert (inputs.length_buckets, inputs.max_msa_clusters, inputs.max_extra_msa) == (True, 512, 5120)
        assert inputs.profile == "tiny" and not prepared.run_config.length_buckets


@pytest.fixture
def fresh_process(shared_cache, tmp_path, monkeypatch):
    """What a new process starts with: no compiled function or parameter shapes in memory (restored after)."""
    compiled, shapes = dict(compiled_mod.Compiled._cache), dict(params._shape_cache)
    compiled_mod.enable_compilation_cache(tmp_path / "jax")

    def restart():
        compiled_mod.Compiled._cache.clear()
        params._shape_cache.clear()

    restart()
    yield restart
    compiled_mod.Compiled._cache.clear()
    compiled_mod.Compiled._cache.update(compiled)
    params._shape_cache.clear()
    params._shape_cache.update(shapes)
    compiled_mod.enable_compilation_cache(shared_cache / "jax")


def test_a_new_process_loads_the_compiled_model_without_tracing_it(raw_features, provider, fresh_process,
                                                                   tmp_path, monkeypatch):
    first = _predict(raw_features, provider, model_names=TWO, strategy="all")
    # Models 1 (templates) and 3 (none) are two configurations: a compiled executable each.
    assert len(list((tmp_path / "jax" / "executables").glob("apply-*.xla"))) == 2
    assert list((tmp_path / "jax" / "param-shapes").glob("shapes-*.json"))
    fresh_process()

    def no_trace(*args, **kwargs):
        raise AssertionError("traced again")

    monkeypatch.setattr(compiled_mod, "lower_and_compile", no_trace)
    monkeypatch.setattr(params, "param_shapes", no_trace)
    again = _predict(raw_features, provider, model_names=TWO, strategy="all")
    for a, b in zip(first.ranked, again.ranked):
        assert np.array_equal(a.result["structure_module"]["final_atom_positions"],
                              b.result["structure_module"]["final_atom_positions"])
        assert a.ranking_confidence == b.ranking_confidence


def test_an_unreadable_compiled_model_is_compiled_again_and_replaced(raw_features, provider, fresh_process,
                                                                     tmp_path, monkeypatch):
    first = _predict(raw_features, provider, model_names="model_3", strategy="all").ranked[0]
    [kept] = (tmp_path / "jax" / "executables").glob("apply-*.xla")
    kept.write_bytes(b"cut short")
    fresh_process()
    calls = []
    real = compiled_mod.lower_and_compile
    monkeypatch.setattr(compiled_mod, "lower_and_compile", lambda *a: calls.append(1) or real(*a))
    again = _predict(raw_features, provider, model_names="model_3", strategy="all").ranked[0]
    assert calls == [1]
    assert again.ranking_confidence == first.ranking_confidence
    assert kept.stat().st_size > 1000  # written anew, loadable by the next process
    fresh_process()
    monkeypatch.setattr(compiled_mod, "lower_and_compile", lambda *a: calls.append(2) or real(*a))
    _predict(raw_features, provider, model_names="model_3", strategy="all")
    assert calls == [1]


def test_parameters_are_read_once_when_a_preload_and_the_run_ask_together(tmp_path, shared_cache, monkeypatch):
    provider = params.ParamsProvider(tmp_path / "none", shared_cache / "params-untrained")
    reads = []
    real = params.load_npz
    monkeypatch.setattr(params, "load_npz", lambda path: reads.append(path.name) or real(path))
    thread = provider.preload(["model_3_ptm", "model_4_ptm"], "tiny")
    a, _ = provider.get("model_3_ptm", "tiny")
    thread.join()
    b, _ = provider.get("model_4_ptm", "tiny")
    assert sorted(reads) == ["params_model_3_ptm_tiny.npz", "params_model_4_ptm_tiny.npz"]
    assert a is provider.get("model_3_ptm", "tiny")[0] and b is not a


def test_caps_fitted_to_a_shallow_msa_predict_what_the_full_caps_predict(raw_features, provider):
    """An MSA shallower than the caps: the fitted run processes fewer (padding) rows and predicts the same."""
    depth = raw_features["msa"].shape[0]
    results = {}
    for fit in (False, True):
        # float32: bf16's rounding (amplified by untrained weights) would hide what the rows change.
        run = RunConfig(profile="tiny", max_msa_clusters=512, max_extra_msa=1024, fit_msa_to_depth=fit,
                        bfloat16=False, model_names="model_1", strategy="all")  # a template model: 4 rows fewer
        results[fit] = predict.Predictor(run, provider).predict(raw_features)
    padded, fitted = results[False], results[True]
    assert padded.msa_caps == (512, 1024)
    assert fitted.msa_caps[0] < 512 and depth <= fitted.msa_caps[0] - 4
    assert fitted.features["msa_feat"].shape[1] == fitted.msa_caps[0] - 4  # model_1 gives 4 rows to templates
    assert fitted.features["extra_msa"].shape[1] == fitted.msa_caps[1]
    for a, b in zip(padded.ranked, fitted.ranked):
        assert a.model == b.model
        d_ca = np.abs(a.result["structure_module"]["final_atom_positions"]
                      - b.result["structure_module"]["final_atom_positions"]).max()
        d_plddt = np.abs(a.result["plddt"] - b.result["plddt"]).max()
        # Equal in exact arithmetic; other shapes may sum in another order (the last float32 bits).
        assert abs(a.ranking_confidence - b.ranking_confidence) < 0.1
        assert d_ca < 0.05 and d_plddt < 0.5


def test_inputs_prepared_where_the_model_differs_are_still_used(raw_features, provider, tmp_path, monkeypatch):
    """A GPU adds its fused kernels to the model's configuration, which a CPU MSA machine does not: the input
    pipeline reads only the data part, and the prepared inputs are found by it."""
    run = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, model_names=("model_3",),
                    length_buckets=True)
    files = inputs.prepare_inputs(run, raw_features, tmp_path / "inputs")
    real = params.runtime_config

    def as_on_a_gpu(name, r):
        cfg = real(name, r)
        cfg.model.global_config.subbatch_size = 7  # a model-only setting, as dispatch() sets its kernels
        return cfg

    monkeypatch.setattr(params, "runtime_config", as_on_a_gpu)
    predictor = predict.Predictor(run, provider, inputs_dir=tmp_path / "inputs")
    predictor.predict(raw_features)
    assert predictor.inputs_used == files


def test_a_model_preloading_does_not_hold_up_another_models_parameters(tmp_path, shared_cache, monkeypatch):
    import threading
    import time

    provider = params.ParamsProvider(tmp_path / "none", shared_cache / "params-untrained")
    provider.get("model_3_ptm", "tiny"), provider.get("model_4_ptm", "tiny")  # on disk (generated once)
    provider = params.ParamsProvider(tmp_path / "none", shared_cache / "params-untrained")
    release, started = threading.Event(), threading.Event()
    real = params.load_npz

    def slow_for_model_4(path):
        if "model_4" in path.name:
            started.set()
            release.wait(10)
        return real(path)

    monkeypatch.setattr(params, "load_npz", slow_for_model_4)
    thread = provider.preload(["model_4_ptm"], "tiny")
    assert started.wait(10)
    t0 = time.perf_counter()
    provider.get("model_3_ptm", "tiny")  # while model_4's read is still going
    assert time.perf_counter() - t0 < 5
    release.set()
    thread.join()


@pytest.mark.parametrize("partitionable", [True, False])
def test_the_host_key_chain_is_jaxs(partitionable):
    import jax

    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        for seed in (0, 1, 7, 123456789, 2 ** 31 - 1):
            key, expected = jax.random.PRNGKey(seed), []
            for _ in range(4):
                key, sub = jax.random.split(key)
                expected.append(np.asarray(sub))
            assert [k.tolist() for k in key_chain(seed, 4)] == [k.tolist() for k in expected]
    finally:
        jax.config.update("jax_threefry_partitionable", before)


@contextlib.contextmanager
def _backend_compiles():
    """A counter of the XLA compiles this thread makes inside the block (each compile of any JAX function, however
    small; compiles of other threads, such as warm-ups an earlier test left running, are not counted)."""
    import threading

    import jax
    from jax._src import monitoring

    count, me = [0], threading.get_ident()

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and threading.get_ident() == me:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield count
    finally:
        monitoring.unregister_event_duration_listener(listen)


def test_a_prediction_after_the_first_compiles_nothing_not_even_small_functions(raw_features, provider, tmp_path):
    import jax

    run = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, model_names="model_1,model_3",
                    strategy="best")
    inputs.prepare_inputs(run, raw_features, tmp_path)  # the input pipeline in the CPU stage, as a GPU job has it
    predict.Predictor(run, provider, inputs_dir=tmp_path).predict(raw_features)  # the model compiled
    jax.clear_caches()  # as a new process, or a new length, finds them: no small function compiled yet
    devices._zeros.clear()
    devices._on_device_params.clear()
    with _backend_compiles() as compiles:
        result = predict.Predictor(run, provider, inputs_dir=tmp_path).predict(raw_features)
    assert compiles[0] == 0  # no feature slicing, key splitting or zero state compiled on the way
    assert [r.phase for r in result.runs] == ["screen", "screen", "full"]


def test_parameters_stay_on_the_device_for_the_next_model_runs(raw_features, provider):
    first = _predict(raw_features, provider, model_names="model_3", strategy="all").ranked[0]
    cfg = params.runtime_config("model_3", RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32))
    host, identity = provider.get("model_3_ptm", "tiny")
    chosen = params.select(host, params.param_shapes_for(cfg))
    a, b = devices.device_params(identity, chosen), devices.device_params(identity, chosen)
    assert a is b and first.params == identity  # the same device tree, moved once
    leaf = next(iter(next(iter(a.values())).values()))
    assert not isinstance(leaf, np.ndarray) and leaf.shape == next(iter(next(iter(chosen.values())).values())).shape


def test_a_warmed_prediction_finds_its_compiled_functions_ready(raw_features, provider):
    run = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, model_names="model_3,model_4",
                    strategy="best")
    predict.Predictor(run, provider).predict(raw_features)  # compiled, and kept on disk
    compiled_mod.Compiled._cache.clear()  # as a new process finds it: on disk only
    spent = predict.Predictor(run, provider).warm(raw_features)
    result = predict.Predictor(run, provider).predict(raw_features)
    assert spent > 0 and all(r.compile_s == 0.0 for r in result.runs)  # not even the load from disk


def test_a_record_queued_to_warm_in_the_background_is_ready_for_its_prediction(raw_features, provider, monkeypatch):
    run = RunConfig(profile="tiny", max_msa_clusters=16, max_extra_msa=32, model_names="model_3", strategy="all")
    predict.Predictor(run, provider).predict(raw_features)  # compiled, and kept on disk
    compiled_mod.Compiled._cache.clear()  # as a new process finds it: on disk only
    monkeypatch.setattr(warmup, "warm_ahead", lambda: True)  # as on a GPU (on the CPU nothing is queued)
    predict.warm_in_background(lambda: raw_features, run, provider)
    warmup._warmers.wait()
    (result,) = predict.Predictor(run, provider).predict(raw_features).runs
    assert result.compile_s == 0.0  # loaded by the warm-up thread, not here


def test_a_process_keeps_only_its_most_recently_used_compiled_models(monkeypatch):
    """A slot's prediction process lives for days and meets many lengths: the compiled applies kept in memory are
    the KEPT most recently used (the executables on disk keep the rest)."""
    monkeypatch.setattr(compiled_mod.Compiled, "_cache", {})
    monkeypatch.setattr(compiled_mod.Compiled, "disk", None)
    monkeypatch.setattr(compiled_mod.Compiled, "KEPT", 2)
    monkeypatch.setattr(compiled_mod.af_model, "RunModel", lambda cfg: type("Runner", (), {"apply": None})())
    compiled = []
    monkeypatch.setattr(compiled_mod, "lower_and_compile", lambda runner, p, batch: compiled.append(1) or object())
    monkeypatch.setattr(compiled_mod, "first_batch", lambda cfg, feat: feat)
    params_ = {"scope": {"w": np.zeros(2, np.float32)}}

    def get(length: int):
        return compiled_mod.Compiled.get(None, "fp", {"aatype": np.zeros((1, length), np.int32)}, params_)

    for length in (10, 20, 10, 30):  # 10 used again after 20: 20 is the least recent when 30 comes
        get(length)
    assert len(compiled) == 3 and len(compiled_mod.Compiled._cache) == 2
    get(10)
    assert len(compiled) == 3  # kept
    get(20)
    assert len(compiled) == 4  # compiled again
