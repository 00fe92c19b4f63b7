"""A complex's inputs as AlphaFold-Multimer makes them, with its own code (alphafold.data.pipeline_multimer,
feature_processing, msa_pairing):

    msas/<chain>/   per distinct chain (the first chain of each sequence: a homotrimer searches once): the
                    monomer searches of the db_preset, UniProt (uniprot_hits.sto) when the chains differ, and the
                    template search (hmmsearch of pdb_seqres, pdb_hits.sto); each chain's searches are one entry
                    of the MSA cache, so a chain seen in an earlier job costs no search
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
from af2jobs.pipeline import msa as msa_mod
from af2jobs.pipeline import templates as templates_mod

if TYPE_CHECKING:
    from af2jobs.pipeline.run import Context

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


def _template_features(sequence: str, chain_dir: Path, ctx: "Context") -> tuple[dict, list]:
    try:
        source = db_mod.template_source(ctx.databases, multimer=True)
        if source is None:
            return templates_mod.empty(), []
        mmcif = source[1].path
        return templates_mod.featurize(sequence, chain_dir, mmcif, ctx.run.max_template_date or date.today(),
                                       mmcif.parent / db_mod.OBSOLETE)
    except Af2JobsError as exc:
        raise StageError(exc.message, stage="features") from None


def search(record: FastaRecord, workdir: Path, ctx: "Context") -> tuple[dict, list]:
    """The searches of each distinct chain (cached per chain); the MSA timings and the databases searched."""
    try:
        searched = msa_mod.searched_for(record, ctx.databases, ctx.run.db_preset)
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
    caches = {r.cache for r in reports.values()}
    timings = {
        "searches": searches, "cache": caches.pop() if len(caches) == 1 else "miss",
        "cache_key": next(iter(reports.values())).cache_key, "seconds": round(sum(r.seconds for r in reports.values()), 3),
        "entries": [{"chain": c, "cache": r.cache, "cache_key": r.cache_key} for c, r in reports.items()],
        "search_s": round(sum(r.seconds for r in reports.values() if r.cache != "hit"), 3),
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
            feats.update(_all_seq_features(chain_dir))
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
