"""What the model is fed: AlphaFold's input pipeline with the residues padded to a bucket (prepared ahead by the CPU
stage, prepare_inputs, or made here) and a prediction's processed features per configuration and device
(ModelInputs); crop_result undoes the padding on the outputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import jax
import numpy as np
from alphafold.model import features as af_features
from alphafold.model.tf import input_pipeline, proteins_dataset
from alphafold.model.tf import np_backend as np_tf

from af2jobs.pipeline import params as params_mod
from af2jobs.pipeline.devices import current_device, device_name
from af2jobs.runconfig import RunConfig, bucket_length


def run_for(run: RunConfig, raw: dict) -> RunConfig:
    """The run a monomer's features are processed and predicted with: its MSA caps fitted to the MSA's rows."""
    if run.multimer or "msa" not in raw:
        return run
    return run.fitted_to(int(raw["msa"].shape[0]))


def feature_length(raw: dict) -> int:
    """The residues of the raw features: a monomer's seq_length is per residue, a complex's a scalar."""
    return int(np.ravel(raw["seq_length"])[0])


def process_features(cfg, raw: dict, random_seed: int, pad_to: int) -> dict:
    """AlphaFold's input pipeline (as RunModel.process_features) with the residue dimension padded to pad_to.

    The model masks padded residues (seq_mask) in attention, pLDDT means, pTM and the recycling tolerance, so the
    scores need no correction; crop_result cuts the per-residue outputs back to the sequence.
    """
    with params_mod.INPUT_PIPELINE:
        return _process_features(cfg, raw, random_seed, pad_to)


def _process_features(cfg, raw: dict, random_seed: int, pad_to: int) -> dict:
    cfg_data, names = af_features.make_data_config(cfg, num_res=pad_to)
    example = dict(raw)
    if "deletion_matrix_int" in example:
        example["deletion_matrix"] = example.pop("deletion_matrix_int").astype(np.float32)
    graph = np_tf.Graph()
    with graph.as_default(), np_tf.device("/device:CPU:0"):
        np_tf.compat.v1.set_random_seed(random_seed)
        tensors = proteins_dataset.np_to_tensor_dict(np_example=example, features=names)
        processed = input_pipeline.process_tensors_from_config(tensors, cfg_data)
    graph.finalize()
    with np_tf.Session(graph=graph) as session:
        out = session.run(processed)
    return {k: v for k, v in out.items() if v.dtype != "O"}


def inputs_name(cfg, random_seed: int, pad_to: int) -> str:
    """The file of one model configuration's processed features, named by what makes them: the data part of the
    configuration (the input pipeline reads no other; the model part differs between a CPU machine and a GPU,
    which adds its fused kernels), the seed and the padded length."""
    return f"inputs-{params_mod.config_fingerprint(cfg.data)}-{random_seed}-{pad_to}.pkl"


def prepare_inputs(run: RunConfig, raw: dict, out_dir: Path) -> list[str]:
    """AlphaFold's input pipeline for each distinct model configuration of a monomer run, written to out_dir for
    the GPU stage (Predictor(inputs_dir=...)), so that the GPU does not wait for it. Returns the files written."""
    from af2jobs import atomic

    length = feature_length(raw)
    pad_to = bucket_length(length) if run.length_buckets else length
    run = run_for(run, raw)
    written = []
    for name in dict.fromkeys(run.model_names):
        cfg = params_mod.runtime_config(name, run)
        file = inputs_name(cfg, run.random_seed, pad_to)
        if file in written:
            continue
        with atomic.replacing(out_dir / file) as fh:
            pickle.dump(process_features(cfg, raw, run.random_seed, pad_to), fh, protocol=4)
        written.append(file)
    return written


def crop_result(result: dict, length: int) -> dict:
    """Per-residue outputs of a padded run cut back to the sequence's own length (no-op when unpadded)."""

    def crop(key_path: tuple, value):
        arr = np.asarray(value)
        name = key_path[-1]
        if name in ("plddt", "final_atom_positions", "final_atom_mask") or key_path[0] in (
                "predicted_lddt", "experimentally_resolved"):
            return arr[:length]
        if name in ("predicted_aligned_error", "aligned_confidence_probs") or key_path[0] == "distogram" and \
                name == "logits":
            return arr[:length, :length]
        if key_path[0] == "masked_msa":
            return arr[:, :length]
        return arr

    def walk(node, path=()):
        if isinstance(node, dict):
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        return crop(path, node)

    return walk(result)


class ModelInputs:
    """A prediction's processed features, per model configuration: made once (or read from the file the CPU stage
    prepared, prepare_inputs) and moved to each device once, for all the models that use them."""

    def __init__(self, inputs_dir: Path | None = None) -> None:
        self.inputs_dir = inputs_dir  # processed features the CPU stage prepared (prepare_inputs), when it did
        self.used: list[str] = []  # the files of inputs_dir read
        self._features: dict[str, dict] = {}
        self._on_device: dict[tuple[str, str], dict] = {}  # (fingerprint, device): the features, moved once

    def processed(self, run: RunConfig, cfg, fingerprint: str, raw: dict) -> dict:
        """The features of this configuration (fingerprint) as the model takes them, made on first use."""
        if fingerprint not in self._features and params_mod.is_multimer(cfg):
            self._features[fingerprint] = params_mod.model_inputs(raw)  # the model samples and crops itself
        if fingerprint not in self._features:
            length = feature_length(raw)
            pad_to = bucket_length(length) if run.length_buckets else length
            ready = self.inputs_dir / inputs_name(cfg, run.random_seed, pad_to) if self.inputs_dir else None
            if ready is not None and ready.is_file():
                with open(ready, "rb") as fh:
                    self._features[fingerprint] = pickle.load(fh)
                self.used.append(ready.name)
            else:
                self._features[fingerprint] = process_features(cfg, raw, run.random_seed, pad_to)
        return self._features[fingerprint]

    def on_this_device(self, cfg, fingerprint: str, feat: dict):
        """The processed features on this thread's device: a complex's as they are, a monomer's as one slice per
        recycling iteration (cut on the host)."""
        key = (fingerprint, device_name())
        if key not in self._on_device:
            device = current_device()
            if params_mod.is_multimer(cfg):
                self._on_device[key] = jax.device_put(feat, device)
            else:
                n = cfg.data.eval.num_ensemble
                steps = feat["aatype"].shape[0] // n
                self._on_device[key] = jax.device_put(
                    [{k: v[r * n:(r + 1) * n] for k, v in feat.items()} for r in range(steps)], device)
        return self._on_device[key]

    def release_devices(self) -> None:
        """The device memory of the features given back (when a prediction ends)."""
        self._on_device.clear()
