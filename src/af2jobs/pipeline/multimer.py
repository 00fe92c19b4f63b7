"""A complex's inputs as AlphaFold-Multimer makes them, with its own code (alphafold.data.pipeline_multimer,
feature_processing, msa_pairing):

    msas/<chain>/   per distinct chain (the first chain of each sequence: a homotrimer searches once): the
                    monomer searches of the db_preset, UniProt (uniprot_hits.sto) when the chains differ, and the
                    template search (hmmsearch of pdb_seqres, pdb_hits.sto); each chain's searches are one entry
                    of the MSA cache, so a chain seen in an earlier job costs no search. In msa_mode mmseqs2, as
                    ColabFold: MMseqs2's UniRef and environmental MSAs, templates from HHsearch of pdb70, and,
                    when the chains differ, the paired MSA (pair.a3m, rows paired by taxon; af2jobs.pipeline.mmseqs)
    features.pkl    the chains' monomer features, converted for the multimer model, with assembly features
                    (asym_id, entity_id, sym_id), rows paired across chains by the species of their UniProt hits,
                    merged and padded as AlphaFold-Multimer's DataPipeline.process does
    msas/chain_id_map.json   chain id -> sequence and description, as AlphaFold writes it
"""

from __future__ import annotations

import copy
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from af2jobs import atomic
from af2jobs.errors import Af2JobsError, CancelledError, StageError
from af2jobs.fasta import CHAIN_IDS, FastaRecord
from af2jobs.pipeline import databases as db_mod
from af2jobs.pipeline import features as features_mod
from af2jobs.pipeline import mmseqs
from af2jobs.pipeline import msa as msa_mod
from af2jobs.pipeline import templates as templates_mod

if TYPE_CHECKING:
    from af2jobs.pipeline.context import Context

MIN_MSA_ROWS = 512  # pipeline_multimer.pad_msa: no zero-sized extra MSA
CHAIN_MAP = "chain_id_map.json"


def chain_map(record: FastaRecord) -> dict[str, dict]:
    return {chain_id: {"sequence": chain.sequence, "description": f"{chain.name} {chain.description}".strip()}
            for chain_id, chain in zip(CHAIN_IDS, record.chains)}


def _all_seq_features(chain_dir: Path) -> dict:
    """The UniProt hits as the `_all_seq` MSA features whose species identifiers pair rows across chains."""
    from alphafold.data import msa_pairing, parsers, pipeline

    msa = parsers.parse_stockholm((chain_dir / msa_mod.OUTPUT_NAMES["uniprot"]).read_text())
    msa = msa.truncate(max_seqs=msa_mod.HIT_LIMITS["uniprot"])
    feats = pipeline.make_msa_features([msa])
    wanted = msa_pairing.MSA_FEATURES + ("msa_species_identifiers",)
    return {f"{k}_all_seq": v for k, v in feats.items() if k in wanted}


def _paired_features(chain_dir: Path) -> dict:
    """msa_mode mmseqs2: the `_all_seq` features of MMseqs2's paired MSA (pair.a3m), whose row j is, in every chain,
    a hit of one taxon (pairaln). Each row's species identifier is its row number, so AlphaFold's own pairing puts
    row j of every chain side by side; no row is dropped as a duplicate, which would shift the rows after it."""
    import numpy as np
    from alphafold.common import residue_constants
    from alphafold.data import parsers

    msa = parsers.parse_a3m((chain_dir / mmseqs.PAIRED_NAME).read_text())
    rows = [[residue_constants.HHBLITS_AA_TO_ID[c] for c in seq] for seq in msa.sequences]
    return {
        "msa_all_seq": np.array(rows, dtype=np.int32),
        "deletion_matrix_int_all_seq": np.array(msa.deletion_matrix, dtype=np.int32),
        "msa_species_identifiers_all_seq": np.array([b""] + [str(j).encode() for j in range(1, len(rows))],
                                                    dtype=np.object_),
    }


def _pair_mmseqs(record: FastaRecord, workdir: Path, ctx: "Context", searched: list) -> list[dict]:
    """msa_mode mmseqs2, chains that differ: their paired MSA (ColabFold's pairing, mmseqs.search_paired) into
    msas/<chain>/pair.a3m, one MMseqs2 run for the complex; its search reports, one per chain."""
    distinct = msa_mod.unique_chains(record)
    uniref = next(db for db in searched if db.name == "mmseqs_uniref")
    ctx.progress("msa", "database_start", {"database": "mmseqs_pair", "chains": len(distinct)})
    t0 = time.perf_counter()
    gpu, engine = msa_mod.mmseqs_plan([uniref.path], ctx.settings.cpus)
    try:
        rows = mmseqs.search_paired([seq for _, seq in distinct], uniref.path,
                                    [workdir / "msas" / c for c, _ in distinct], ctx.settings.cpus, gpu=gpu)
    except Af2JobsError as exc:
        raise StageError(f"pairing the chains with MMseqs2 failed: {exc.message}", stage="msa") from None
    except OSError as exc:
        raise StageError(f"pairing the chains with MMseqs2 failed: {exc}", stage="msa") from exc
    seconds = round(time.perf_counter() - t0, 3)
    ctx.progress("msa", "database_done", {"database": "mmseqs_pair", "hits": rows[0], "seconds": seconds})
    return [{"database": f"{c}:mmseqs_pair", "output": f"{c}/{mmseqs.PAIRED_NAME}", "hits": n,
             "seconds": round(seconds / len(distinct), 3), "engine": engine} for (c, _), n in zip(distinct, rows)]


def _no_template(length: int) -> dict:
    """A chain's template features when it has none, as AlphaFold-Multimer's featurizer makes them: one empty
    template (the multimer's feature conversion needs a template axis)."""
    import numpy as np
    from alphafold.common import residue_constants as rc

    return {"template_aatype": np.zeros((1, length, len(rc.restypes_with_x_and_gap)), np.float32),
            "template_all_atom_masks": np.zeros((1, length, rc.atom_type_num), np.float32),
            "template_all_atom_positions": np.zeros((1, length, rc.atom_type_num, 3), np.float32),
            "template_domain_names": np.array([b""], dtype=np.object_),
            "template_sequence": np.array([b""], dtype=np.object_),
            "template_sum_probs": np.array([0], dtype=np.float32)}


def _template_features(sequence: str, chain_dir: Path, ctx: "Context") -> tuple[dict, list]:
    try:  # msa_mode mmseqs2 finds a chain's templates as ColabFold does: HHsearch of pdb70 with its UniRef MSA
        source = db_mod.template_source(ctx.databases, multimer=ctx.run.msa_mode != "mmseqs2")
        if source is None:
            return _no_template(len(sequence)), []
        mmcif = source[1].path
        feats, used = templates_mod.featurize(sequence, chain_dir, mmcif, ctx.run.max_template_date or date.today(),
                                              mmcif.parent / db_mod.OBSOLETE)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="features") from None
    return (feats if feats["template_aatype"].ndim == 3 and len(feats["template_aatype"]) else
            _no_template(len(sequence))), used


def search(record: FastaRecord, workdir: Path, ctx: "Context") -> tuple[dict, list]:
    """The searches of each distinct chain (cached per chain); the MSA timings and the databases searched."""
    try:
        searched = msa_mod.searched_for(record, ctx.databases, ctx.run.db_preset, ctx.run.msa_mode)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="msa") from None
    ctx.progress("msa", "start", {"databases": [d.name for d in searched], "chains": len(record.chains)})
    cache_root = ctx.settings.cache_dir / "msa" if ctx.settings.msa_cache else None
    reports = {}
    for chain_id, sequence in msa_mod.unique_chains(record):
        reports[chain_id] = msa_mod.run_msa(
            sequence, searched, workdir / "msas" / chain_id, cpus=ctx.settings.cpus, cache_root=cache_root,
            progress=lambda db, event, details, c=chain_id: ctx.progress(
                "msa", f"database_{event}", {"database": f"{c}:{db}", **details}))
    searches = [{**s, "database": f"{c}:{s['database']}", "output": f"{c}/{s['output']}"}
                for c, r in reports.items() for s in r.to_dict()["searches"]]
    paired = []
    if ctx.run.msa_mode == "mmseqs2" and len(reports) > 1:
        paired = _pair_mmseqs(record, workdir, ctx, searched)
        searches += paired
    caches = {r.cache for r in reports.values()}
    timings = {
        "searches": searches, "cache": caches.pop() if len(caches) == 1 else "miss",
        "cache_key": next(iter(reports.values())).cache_key, "seconds": round(sum(r.seconds for r in reports.values()), 3),
        "entries": [{"chain": c, "cache": r.cache, "cache_key": r.cache_key} for c, r in reports.items()],
        "search_s": round(sum(r.seconds for r in reports.values() if r.cache != "hit")
                          + sum(p["seconds"] for p in paired), 3),
    }
    return timings, searched


def build_features(record: FastaRecord, workdir: Path, ctx: "Context") -> tuple[dict, dict]:
    """The merged multimer features of the complex, and what templates each distinct chain used."""
    from alphafold.data import feature_processing, pipeline_multimer

    distinct = msa_mod.unique_chains(record)
    pairing = len(distinct) > 1
    per_sequence: dict[str, dict] = {}
    used: dict[str, dict] = {}
    for chain_id, sequence in distinct:
        chain_dir = workdir / "msas" / chain_id
        template_feats, _ = _template_features(sequence, chain_dir, ctx)
        found = templates_mod.used(chain_dir)
        if found:
            used[chain_id] = found
        try:
            feats = features_mod.build_features(sequence, f"chain_{chain_id}", chain_dir, template_feats)
        except ValueError as exc:
            raise StageError(f"chain {chain_id}: {exc}", stage="features") from exc
        if pairing:
            feats.update(_paired_features(chain_dir) if ctx.run.msa_mode == "mmseqs2" else _all_seq_features(chain_dir))
        per_sequence[sequence] = pipeline_multimer.convert_monomer_features(feats, chain_id=chain_id)
    chains = {chain_id: copy.deepcopy(per_sequence[chain.sequence])
              for chain_id, chain in zip(CHAIN_IDS, record.chains)}
    merged = feature_processing.pair_and_merge(all_chain_features=pipeline_multimer.add_assembly_features(chains))
    return pipeline_multimer.pad_msa(merged, MIN_MSA_ROWS), used


def msa_stage(record: FastaRecord, workdir: Path, ctx: "Context", timings: dict) -> dict:
    """The MSA stage of a complex: msas/<chain>/..., msas/chain_id_map.json, features.pkl, timings.json."""
    msa, searched = search(record, workdir, ctx)
    timings["msa"] = msa
    atomic.write_json(workdir / "msas" / "databases.json", [d.to_dict() for d in searched])
    atomic.write_json(workdir / "msas" / CHAIN_MAP, chain_map(record))
    ctx.progress("msa", "done", {"cache": msa["cache"], "seconds": msa["seconds"]})
    if ctx.should_cancel():
        raise CancelledError("the job was cancelled after the MSA stage")
    ctx.progress("features", "start", {})
    t0 = time.perf_counter()
    feats, used = build_features(record, workdir, ctx)
    ids = [f"{u['pdb_id']}_{u['chain']}" for found in used.values() for u in found["used"]]
    timings["templates"] = {"hits": sum(f["hits"] for f in used.values()), "used": ids,
                            "chains": {c: [f"{u['pdb_id']}_{u['chain']}" for u in f["used"]] for c, f in used.items()},
                            "seconds": round(sum(f["seconds"] for f in used.values()), 3)}
    features_mod.write_features(feats, workdir / "features.pkl")
    rows = int(feats["msa"].shape[0])
    timings["features"] = {"seconds": round(time.perf_counter() - t0, 3), "msa_rows": rows}
    atomic.write_json(workdir / "timings.json", timings)
    ctx.progress("features", "done", {"msa_rows": rows})
    return timings


def used_templates(msa_dir: Path) -> dict | None:
    """The templates of every distinct chain (msas/<chain>/templates.json), in the monomer's shape, with chains."""
    found = {p.parent.name: templates_mod.used(p.parent) for p in sorted(msa_dir.glob(f"*/{templates_mod.USED_NAME}"))}
    if not found:
        return None
    return {"max_template_date": next(iter(found.values()))["max_template_date"],
            "hits": sum(f["hits"] for f in found.values()),
            "used": [{**u, "query_chain": c} for c, f in found.items() for u in f["used"]],
            "seconds": round(sum(f["seconds"] for f in found.values()), 3)}


__all__ = ["CHAIN_MAP", "build_features", "chain_map", "msa_stage", "search", "used_templates"]
