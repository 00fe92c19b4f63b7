"""Model configurations and their parameters: official npz files, or deterministic UNTRAINED ones.

Official parameters are `params_model_{1..5}[_ptm].npz` (flat keys `module/path//name`, triangle multiplication
weights un-fused). When a params directory holds none, parameters of the official shapes are generated from a
seeded numpy generator (shapes from `jax.eval_shape` of the model's init, not haiku's slow init), cached in the
same npz format, and every output says UNTRAINED.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import jax
import ml_collections
import numpy as np
from alphafold.data import pipeline as af_pipeline
from alphafold.data import parsers
from alphafold.model import config as af_config
from alphafold.model import model as af_model
from alphafold.model import utils as af_utils

from af2jobs import atomic, memory
from af2jobs.runconfig import RunConfig

UNTRAINED = "UNTRAINED"
_STACKED = ("evoformer_iteration", "extra_msa_stack", "__layer_stack")


def variant(model_name: str, use_ptm: bool) -> str:
    return f"{model_name}_ptm" if use_ptm else model_name


def is_multimer(cfg: ml_collections.ConfigDict) -> bool:
    return bool(cfg.model.global_config.multimer_mode)


def official_config(name: str, profile: str) -> ml_collections.ConfigDict:
    """The published configuration of a model (templates as published), shrunk for the 'tiny' profile."""
    cfg = af_config.model_config(name)
    if not is_multimer(cfg):
        cfg.data.eval.num_ensemble = 1
    if profile == "tiny":
        evo = cfg.model.embeddings_and_evoformer
        evo.evoformer_num_block = 1
        evo.extra_msa_stack_num_block = 1
        cfg.model.heads.structure_module.num_layer = 2
        evo.template.template_pair_stack.num_block = 1
    return cfg


def runtime_config(name: str, run: RunConfig) -> ml_collections.ConfigDict:
    """The configuration a prediction runs with: the published one (templates for models 1 and 2, as they were
    trained; none for 3-5) with the run's MSA caps, recycles and ensembles.

    Models 1 and 2 then differ only in their parameters, and so do 3, 4 and 5: two compiled functions serve all
    five models.
    """
    cfg = official_config(run.variant(name), run.profile)
    if is_multimer(cfg):
        return _multimer_runtime(cfg, run)
    cfg.data.eval.num_ensemble = run.num_ensemble
    cfg.data.common.max_extra_msa = run.max_extra_msa
    cfg.data.eval.max_msa_clusters = run.max_msa_clusters
    cfg.data.common.num_recycle = run.num_recycle
    cfg.model.num_recycle = run.num_recycle
    cfg.model.rank_by = run.rank_by if run.use_ptm else "plddt"
    cfg.model.recycle_early_stop_tolerance = run.recycle_tolerance
    g = cfg.model.global_config
    g.bfloat16 = run.bfloat16
    g.length_buckets = run.length_buckets
    if jax.default_backend() == "gpu":
        # Fused Pallas kernels (or the CUDA ones on pre-Ampere parts), as the GPU supports them.
        import colabfold_kernels

        g.update(colabfold_kernels.dispatch())
    return cfg


def _multimer_runtime(cfg: ml_collections.ConfigDict, run: RunConfig) -> ml_collections.ConfigDict:
    """AlphaFold-Multimer's configuration with the run's MSA caps (cluster centres, extra rows), recycles and
    tolerance. Its features are not processed by the monomer input pipeline: the model samples the MSA itself.
    Models 1-3 then share one compiled function, 4 and 5 (1,152 extra rows) another."""
    evo = cfg.model.embeddings_and_evoformer
    evo.num_msa = min(evo.num_msa, run.max_msa_clusters)
    evo.num_extra_msa = min(evo.num_extra_msa, run.max_extra_msa)
    cfg.model.num_recycle = run.num_recycle
    cfg.model.recycle_early_stop_tolerance = run.recycle_tolerance
    g = cfg.model.global_config
    g.bfloat16 = run.bfloat16
    if jax.default_backend() == "gpu":
        import colabfold_kernels

        g.update(colabfold_kernels.dispatch())
    return cfg


def msa_rows_read(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
    """The MSA rows a model reads at most: (cluster centres, extra rows). A template model gives up max_templates
    cluster rows to its templates (AlphaFold's reduce_msa_clusters_by_max_templates); a complex's model samples
    num_msa and num_extra_msa itself."""
    if is_multimer(cfg):
        evo = cfg.model.embeddings_and_evoformer
        return int(evo.num_msa), int(evo.num_extra_msa)
    reduce = cfg.data.eval.max_templates if cfg.data.common.reduce_msa_clusters_by_max_templates else 0
    return int(cfg.data.eval.max_msa_clusters - reduce), int(cfg.data.common.max_extra_msa)


def config_fingerprint(cfg: ml_collections.ConfigDict) -> str:
    return hashlib.sha256(cfg.to_json(sort_keys=True).encode()).hexdigest()[:16]


def _dummy_features(cfg: ml_collections.ConfigDict, length: int = 16) -> dict:
    seq = "A" * length
    raw = {
        **af_pipeline.make_sequence_features(seq, "shape", length),
        **af_pipeline.make_msa_features([parsers.Msa([seq], [[0] * length], ["shape"])]),
    }
    if cfg.data.common.use_templates:
        raw.update({
            "template_aatype": np.zeros((1, length, 22), np.float32),
            "template_all_atom_masks": np.zeros((1, length, 37), np.float32),
            "template_all_atom_positions": np.zeros((1, length, 37, 3), np.float32),
            "template_domain_names": np.array([b"none"], dtype=object),
            "template_sequence": np.array([b"none"], dtype=object),
            "template_sum_probs": np.zeros((1, 1), np.float32),
        })
    return raw


def _dummy_multimer_features(length: int = 16) -> dict:
    """A two-chain complex of poly-alanine with single-sequence MSAs, through AlphaFold-Multimer's own merge."""
    from alphafold.data import feature_processing, pipeline_multimer
    from alphafold.data import templates as af_templates

    seq = "A" * length
    chains = {}
    for chain_id in ("A", "B"):
        feats = {**af_pipeline.make_sequence_features(seq, f"chain_{chain_id}", length),
                 **af_pipeline.make_msa_features([parsers.Msa([seq], [[0] * length], ["shape"])]),
                 **{name: np.zeros((1, length, 37, 3) if name == "template_all_atom_positions" else
                                   (1, length, 37) if name == "template_all_atom_masks" else
                                   (1, length, 22), np.float32)
                    for name in ("template_aatype", "template_all_atom_masks", "template_all_atom_positions")},
                 "template_domain_names": np.array([b"none"], dtype=object),
                 "template_sequence": np.array([b"none"], dtype=object),
                 "template_sum_probs": np.zeros((1, 1), np.float32)}
        assert set(af_templates.TEMPLATE_FEATURES) <= set(feats)
        chains[chain_id] = pipeline_multimer.convert_monomer_features(feats, chain_id=chain_id)
    merged = feature_processing.pair_and_merge(pipeline_multimer.add_assembly_features(chains))
    return pipeline_multimer.pad_msa(merged, 512)


def model_inputs(feat: dict) -> dict:
    """The features the multimer model reads (the merged features also carry strings and bookkeeping)."""
    return {k: v for k, v in feat.items() if np.asarray(v).dtype != object and k not in _NOT_INPUTS}


_NOT_INPUTS = ("auth_chain_id", "num_alignments", "num_templates", "msa_species_identifiers",
               "template_domain_names", "template_sequence", "template_sum_probs", "domain_name", "sequence")


# AlphaFold's input pipeline (alphafold.model.tf's numpy backend) keeps its random seeds in module globals: one
# thread at a time runs it (a parameter preload's shape pass beside a record's features).
INPUT_PIPELINE = threading.RLock()


def param_shapes(cfg: ml_collections.ConfigDict) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
    runner = af_model.RunModel(cfg)
    if is_multimer(cfg):
        feat = model_inputs(_dummy_multimer_features())
        length = feat["aatype"].shape[0]
        prev = {"prev_msa_first_row": np.zeros([length, 256], np.float16),
                "prev_pair": np.zeros([length, length, 128], np.float16),
                "prev_pos": np.zeros([length, 37, 3], np.float16)}
        return jax.eval_shape(runner.init, jax.random.PRNGKey(0), {**feat, "prev": prev})
    with INPUT_PIPELINE:
        feat = runner.process_features(_dummy_features(cfg), random_seed=0)
    return jax.eval_shape(runner.init, jax.random.PRNGKey(0), feat)


def _init_value(rng: np.random.Generator, scope: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Values in the spirit of haiku's initialisers: unit scales, zero offsets, fan-in scaled weights."""
    if name == "scale":
        return np.ones(shape, np.float32)
    if name in ("offset", "bias") or name.endswith("_bias"):
        return np.zeros(shape, np.float32)
    dims = shape[1:] if any(s in scope for s in _STACKED) and len(shape) > 1 else shape
    fan_in = dims[0] if len(dims) > 1 else 1
    return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32)


def untrained_params(cfg: ml_collections.ConfigDict, seed_name: str) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic parameters of the model's shapes (haiku layout, fused as the model code uses them)."""
    seed = int.from_bytes(hashlib.sha256(seed_name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    shapes = param_shapes(cfg)
    return {
        scope: {name: _init_value(rng, scope, name, tuple(s.shape)) for name, s in sorted(shapes[scope].items())}
        for scope in sorted(shapes)
    }


def save_npz(params: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Write haiku params in the official npz format (flat keys, triangle multiplication un-fused), atomically."""
    flat = {f"{scope}//{name}": arr for scope, d in params.items() for name, arr in d.items()}
    unfused = af_utils.flat_params_to_haiku(flat, fuse=False, to_jnp=False)
    flat = {f"{scope}//{name}": np.asarray(arr) for scope, d in unfused.items() for name, arr in d.items()}
    with atomic.replacing(path) as fh:
        np.savez(fh, **flat)


def load_npz(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Read official-format npz as the official loader does (fusing triangle multiplication weights)."""
    with np.load(path, allow_pickle=False) as npz:
        flat = {k: npz[k] for k in npz.files}
    return af_utils.flat_params_to_haiku(flat, fuse=True, to_jnp=False)


def sha256_file(path: Path) -> str:
    """Checksum of a params file, remembered beside it (keyed by size and mtime): hashing 370 MB is not free."""
    st = path.stat()
    side = path.with_name(path.name + ".sha256.json")
    try:
        meta = json.loads(side.read_text())
        if meta["size"] == st.st_size and meta["mtime"] == st.st_mtime:
            return meta["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        atomic.write_json(side, {"size": st.st_size, "mtime": st.st_mtime, "sha256": digest}, indent=None)
    except OSError:
        pass
    return digest


@dataclass(frozen=True)
class ParamsIdentity:
    model: str  # e.g. model_1_ptm
    source: str  # "official" | "UNTRAINED"
    release: str
    sha256: str
    path: str

    @property
    def untrained(self) -> bool:
        return self.source == UNTRAINED

    def to_dict(self) -> dict:
        return {"model": self.model, "source": self.source, "release": self.release,
                "sha256": self.sha256, "path": self.path}


def _release(params_dir: Path) -> str:
    for name in ("RELEASE", "VERSION"):
        f = params_dir / name
        if f.is_file():
            return f.read_text().strip().splitlines()[0]
    return "official (release not recorded)"


def official_path(params_dir: Path, model: str) -> Path | None:
    """AlphaFold's own layout is data_dir/params/params_X.npz; accept the npz directly in params_dir too."""
    for candidate in (params_dir / f"params_{model}.npz", params_dir / "params" / f"params_{model}.npz"):
        if candidate.is_file():
            return candidate
    return None


class ParamsProvider:
    """Parameters for each model: official from params_dir when present, else generated UNTRAINED and cached. The
    KEPT most recently used models stay in memory (a process that predicts monomers and complexes for days would
    otherwise hold every model it met)."""

    KEPT = memory.MODELS_KEPT

    def __init__(self, params_dir: Path, cache_dir: Path) -> None:
        self.params_dir = params_dir
        self.cache_dir = cache_dir
        self._loaded: dict[tuple[str, str], tuple[dict, ParamsIdentity]] = {}
        self._lock = threading.Lock()  # guards _locks
        self._locks: dict[tuple[str, str], threading.Lock] = {}  # one per model: read once, whoever asks first

    def get(self, model: str, profile: str) -> tuple[dict[str, dict[str, np.ndarray]], ParamsIdentity]:
        key = (model, profile)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # another model's read (a preload) does not hold this one up
            with self._lock:
                found = self._loaded.pop(key, None)
                if found is not None:
                    self._loaded[key] = found  # the most recently used last
                    return found
            found = self._load(model, profile)
            with self._lock:
                self._loaded[key] = found
                for old in list(self._loaded)[: max(len(self._loaded) - self.KEPT, 0)]:
                    del self._loaded[old]
            return found

    def preload(self, models: list[str], profile: str) -> threading.Thread:
        """Read these models' parameters in a background thread, in order, while the caller runs the first: a
        failure there is left for the caller's own get() to raise."""

        def read() -> None:
            for model in models:
                try:
                    self.get(model, profile)
                except Exception:  # noqa: BLE001 - get() raises it again in the thread that needs the model
                    return

        thread = threading.Thread(target=read, name="params-preload", daemon=True)
        thread.start()
        return thread

    def _load(self, model: str, profile: str):
        official = official_path(self.params_dir, model) if profile == "full" else None
        if official is not None:
            identity = ParamsIdentity(model, "official", _release(official.parent), sha256_file(official), str(official))
            return load_npz(official), identity
        suffix = "" if profile == "full" else f"_{profile}"
        path = self.cache_dir / f"params_{model}{suffix}.npz"
        if not path.is_file():
            save_npz(untrained_params(official_config(model, profile), f"af2jobs-untrained:{model}:{profile}"), path)
        identity = ParamsIdentity(model, UNTRAINED, f"af2jobs untrained (seeded numpy, {profile} config)",
                                  sha256_file(path), str(path))
        return load_npz(path), identity


def select(params: dict[str, dict[str, np.ndarray]], shapes: dict) -> dict[str, dict[str, np.ndarray]]:
    """The subset the runtime model uses (e.g. model_1's template weights when templates are off)."""
    missing = [f"{s}//{n}" for s in shapes for n in shapes[s] if n not in params.get(s, {})]
    if missing:
        raise ValueError(f"parameters lack {len(missing)} entries, e.g. {missing[0]}")
    return {s: {n: params[s][n] for n in shapes[s]} for s in shapes}


def param_signature(params: dict) -> int:
    """What of the parameters a compiled apply is specialised to: every leaf's name, shape and dtype."""
    return hash(tuple(sorted((scope, name, tuple(v.shape), str(v.dtype))
                             for scope, d in params.items() for name, v in d.items())))


_shape_cache: dict[str, dict] = {}
_shape_folder: list[Path] = []  # where remember_shapes keeps them for later processes


def remember_shapes(folder: Path) -> None:
    """param_shapes_for also keeps its answers in `folder` (a JSON file per configuration and model code version),
    so that a new process does not trace the model's init to learn them."""
    _shape_folder[:] = [folder]


def package_version(dist: str) -> str | None:
    """An installed distribution's version (None: not installed): what the files kept for later processes are
    keyed on besides the configuration."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _shape_file(fp: str) -> Path | None:
    if not _shape_folder:
        return None
    code = package_version("alphafold-colabfold") or "unknown"
    return _shape_folder[0] / f"shapes-{fp}-{code}-jax{jax.__version__}.json"


def _read_shapes(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return {scope: {name: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                        for name, (shape, dtype) in d.items()} for scope, d in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def param_shapes_for(cfg: ml_collections.ConfigDict) -> dict:
    """param_shapes, remembered per configuration (eval_shape of the init takes seconds), on disk too once
    remember_shapes named a folder."""
    fp = config_fingerprint(cfg.model)  # the modules decide the shapes; the MSA caps (data) do not
    if fp not in _shape_cache:
        path = _shape_file(fp)
        shapes = _read_shapes(path) if path is not None and path.is_file() else None
        if shapes is None:
            shapes = param_shapes(cfg)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic.write_json(path, {scope: {name: [list(s.shape), str(s.dtype)] for name, s in d.items()}
                                             for scope, d in shapes.items()}, indent=None)
                except OSError:
                    pass
        _shape_cache[fp] = shapes
    return _shape_cache[fp]
