"""Features stage: AlphaFold's own feature code over the sequence and the msas/ files, written as features.pkl.

Template features come from af2jobs.pipeline.templates (empty ones when no template database is installed, as
AlphaFold's are when it finds no template).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from alphafold.data import parsers, pipeline

from af2jobs import atomic
from af2jobs.pipeline import templates
from af2jobs.pipeline.msa import OUTPUT_NAMES, supplied

# AlphaFold's order of MSAs in the features: uniref90, bfd, mgnify (MMseqs2's UniRef and environmental A3M in
# the same places).
_ORDER = ("uniref90", "mmseqs_uniref", "bfd_uniref", "small_bfd", "mgnify", "mmseqs_env")


def read_msas(msa_dir: Path) -> list[tuple[str, parsers.Msa]]:
    """The MSAs in msa_dir, in AlphaFold's order; a supplied one (the request's own) comes first."""
    own = supplied(msa_dir)
    paths = [("supplied", own)] if own is not None else []
    paths += [(name, msa_dir / OUTPUT_NAMES[name]) for name in _ORDER]
    msas = []
    for name, path in paths:
        if not path.is_file():
            continue
        text = path.read_text()
        msa = parsers.parse_a3m(text) if path.suffix == ".a3m" else parsers.parse_stockholm(text)
        msas.append((name, msa))
    return msas


def _deduplicate(msas: list[parsers.Msa], query: str) -> list[parsers.Msa]:
    """Drop repeated aligned sequences across all MSAs (AlphaFold does this in make_msa_features)."""
    seen: set[str] = set()
    out = []
    for msa in msas:
        keep = [i for i, s in enumerate(msa.sequences) if not (s in seen or seen.add(s))]
        if keep:
            out.append(parsers.Msa(
                sequences=[msa.sequences[i] for i in keep],
                deletion_matrix=[msa.deletion_matrix[i] for i in keep],
                descriptions=[msa.descriptions[i] for i in keep],
            ))
    if not out:  # no database at all: the query alone is a valid single-sequence MSA
        out = [parsers.Msa([query], [[0] * len(query)], ["query"])]
    return out


def build_features(sequence: str, description: str, msa_dir: Path,
                   template_features: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """AlphaFold's monomer features: sequence, MSA and template features (empty templates when none)."""
    msas = [m for _, m in read_msas(msa_dir)]
    for msa in msas:
        if msa.sequences and msa.sequences[0] != sequence:
            raise ValueError("an MSA's first row is not the query sequence")
    return {
        **pipeline.make_sequence_features(sequence=sequence, description=description, num_res=len(sequence)),
        **pipeline.make_msa_features(_deduplicate(msas, sequence)),
        **(template_features if template_features is not None else templates.empty()),
    }


def msa_depth(features: dict[str, np.ndarray]) -> list[int]:
    """Number of aligned (non-gap) sequences at each position: the coverage plot of ColabFold."""
    gap = 21  # HHBLITS_AA_TO_ID['-']
    return (features["msa"] != gap).sum(axis=0).astype(int).tolist()


TEMPLATE_SEARCHES = ("pdb70", "pdb_seqres")  # searches whose hits are templates, not MSA rows


def depth_summary(searches: list[dict], unique: int, read: tuple[int, int], model: str) -> dict:
    """The MSA's depth, reported once and the same way everywhere (timings.json, versions.json, predictions.json,
    the report, the summary): the rows given (the query once, a complex's once per distinct chain, plus every
    sequence search's hits, or a supplied MSA's rows), the rows left after AlphaFold's de-duplication (the
    features' rows), and the rows the model read: its cluster centres and extra rows, under this run's caps
    (`read`, of `model`: the best)."""
    sequence = [s for s in searches if s["database"].rsplit(":", 1)[-1] not in TEMPLATE_SEARCHES]
    queries = len({s["database"].split(":")[0] for s in sequence if ":" in s["database"]}) or 1  # a chain each
    given = queries + sum(s["hits"] for s in sequence)
    clusters = min(unique, read[0])
    extra = min(max(unique - clusters, 0), read[1])
    return {"given": given, "unique": unique,
            "used": {"clusters": clusters, "extra": extra, "rows": clusters + extra, "caps": list(read),
                     "model": model}}


def depth_line(depth: dict) -> str:
    """The depth in words: "7526 given, 7362 unique, 64 + 128 read by the model"."""
    used = depth["used"]
    return (f"{depth['given']} given, {depth['unique']} unique, {used['clusters']} + {used['extra']} read by the "
            f"model")


def write_features(features: dict[str, np.ndarray], path: Path) -> None:
    with atomic.replacing(path) as fh:
        pickle.dump(features, fh, protocol=4)
