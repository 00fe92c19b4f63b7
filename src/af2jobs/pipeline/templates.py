"""Templates as AlphaFold 2.3 finds and featurises them, with its own code: HHsearch (AlphaFold's wrapper, HH-suite's
binary) of the UniRef90 MSA against pdb70, then alphafold.data.templates' HhsearchHitFeaturizer over pdb_mmcif,
with max_template_date and pdb_mmcif/obsolete.dat honoured and Kalign realigning a hit whose sequence differs
from its mmCIF chain.

    search(sequence, msa_dir, pdb70)        msas/pdb_hits.hhr: part of the MSA stage (and of its cached entry)
    search_seqres(msa_dir, pdb_seqres, ...) msas/<chain>/pdb_hits.sto: a complex's chain, as AlphaFold-Multimer
                                             searches (hmmsearch of an HMM of the UniRef90 MSA against pdb_seqres)
    featurize(sequence, msa_dir, mmcif, ...) the template features (MAX_TEMPLATE_HITS at most; the model takes the
                                             first 4) of the hits AlphaFold 2.3's prefilter passes (coverage over
                                             10 %, no copy of the query, 10 residues or more), and what was used
                                             and skipped: msas/templates.json
    empty()                                 no template database: the empty features AlphaFold makes when it finds
                                             no template (models 1 and 2 then run on masked templates)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from af2jobs import atomic
from af2jobs.errors import DatabaseError

if TYPE_CHECKING:  # numpy only where features are made: the Lambda layer imports this module's names without it
    import numpy as np

log = logging.getLogger(__name__)

HITS_NAME = "pdb_hits.hhr"
SEQRES_HITS_NAME = "pdb_hits.sto"
USED_NAME = "templates.json"
MAX_TEMPLATE_HITS = 20  # run_alphafold.py's MAX_TEMPLATE_HITS
UNIREF_MAX_HITS = 10_000  # the UniRef90 rows HHsearch sees (AlphaFold's uniref_max_hits)
# AlphaFold 2.3's prefilter of a template hit (alphafold/data/templates.py _assess_hhsearch_hit, as its
# _process_single_hit calls it): the fork alphafold-colabfold ships keeps only the date check, so they are here.
MIN_ALIGN_RATIO = 0.1  # a hit must align more than 10 % of the query's residues
MAX_SUBSEQUENCE_RATIO = 0.95  # a hit that is the query's own sequence (over 95 % of its length) is no template
MIN_TEMPLATE_LENGTH = 10


def search(msa_dir: Path, pdb70_prefix: Path, msa_file: Path) -> int:
    """HHsearch of an MSA (the UniRef90 one, as AlphaFold prepares it: deduplicated, empty columns removed, A3M;
    or the request's own) against pdb70; writes msa_dir/pdb_hits.hhr and returns the number of hits."""
    from alphafold.data import parsers
    from alphafold.data.tools import hhsearch

    binary = shutil.which("hhsearch")
    if binary is None:
        raise DatabaseError("hhsearch is not installed: the template search needs HH-suite (make tools)")
    if msa_file.suffix == ".sto":
        msa = parsers.deduplicate_stockholm_msa(msa_file.read_text())
        msa = parsers.remove_empty_columns_from_stockholm_msa(msa)
        a3m = parsers.convert_stockholm_to_a3m(msa, max_sequences=UNIREF_MAX_HITS)
    else:
        a3m = msa_file.read_text()
    hhr = hhsearch.HHSearch(binary_path=binary, databases=[str(pdb70_prefix)]).query(a3m)
    (msa_dir / HITS_NAME).write_text(hhr)
    return len(parsers.parse_hhr(hhr))


def search_seqres(msa_dir: Path, seqres: Path, msa_file: Path, cpus: int = 8) -> int:
    """AlphaFold-Multimer's template search: hmmbuild of the chain's UniRef90 MSA (deduplicated, empty columns
    removed), hmmsearch of pdb_seqres with AlphaFold's options; writes msa_dir/pdb_hits.sto, returns the hits."""
    from alphafold.data import parsers
    from alphafold.data.tools import hmmsearch

    binaries = {name: shutil.which(name) for name in ("hmmsearch", "hmmbuild")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        raise DatabaseError(f"{' and '.join(missing)} not installed: a complex's template search needs HMMER "
                            "(Debian hmmer; make tools)")
    msa = parsers.deduplicate_stockholm_msa(msa_file.read_text())
    msa = parsers.remove_empty_columns_from_stockholm_msa(msa)
    searcher = hmmsearch.Hmmsearch(binary_path=binaries["hmmsearch"], hmmbuild_binary_path=binaries["hmmbuild"],
                                   database_path=str(seqres))
    sto = searcher.query(msa)
    (msa_dir / SEQRES_HITS_NAME).write_text(sto)
    query = parsers.parse_stockholm(msa_file.read_text()).sequences[0]
    return len(searcher.get_template_hits(output_string=sto, input_sequence=query))


def prefilter(hits: list, query: str) -> tuple[list, list[str]]:
    """AlphaFold 2.3's prefilter: the hits that pass, and a line for each that does not (as AlphaFold words it)."""
    kept, skipped = [], []
    for hit in hits:
        name = hit.name.split()[0]
        template = hit.hit_sequence.replace("-", "")
        align_ratio = hit.aligned_cols / len(query)
        length_ratio = len(template) / len(query)
        if align_ratio <= MIN_ALIGN_RATIO:
            why = f"Proportion of residues aligned to query too small. Align ratio: {align_ratio:.3f}."
        elif template in query and length_ratio > MAX_SUBSEQUENCE_RATIO:
            why = f"Template is an exact subsequence of query with large coverage. Length ratio: {length_ratio:.3f}."
        elif len(template) < MIN_TEMPLATE_LENGTH:
            why = f"Template too short. Length: {len(template)}."
        else:
            kept.append(hit)
            continue
        skipped.append(f"hit {name} did not pass prefilter: {why}")
    return kept, skipped


def empty() -> dict[str, np.ndarray]:
    import numpy as np
    from alphafold.data import templates

    return {name: np.array([], dtype=dtype) for name, dtype in templates.TEMPLATE_FEATURES.items()}


def featurize(sequence: str, msa_dir: Path, mmcif_dir: Path, max_template_date: date,
              obsolete: Path | None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The template features of the hits in msa_dir/pdb_hits.hhr, and one entry per template used (written to
    msa_dir/templates.json): PDB id and chain, release date, HHsearch's sum_probs, aligned columns."""
    import numpy as np
    from alphafold.data import mmcif_parsing, parsers, templates

    seqres_file = msa_dir / SEQRES_HITS_NAME
    hits_file = seqres_file if seqres_file.is_file() else msa_dir / HITS_NAME
    if not hits_file.is_file():
        return empty(), []
    kalign = shutil.which("kalign")
    if kalign is None:
        raise DatabaseError("kalign is not installed: the template featurisation needs it (Debian kalign; make tools)")
    t0 = time.perf_counter()
    if hits_file is seqres_file:  # a complex's chain: hmmsearch hits, featurised as AlphaFold-Multimer does
        a3m = parsers.convert_stockholm_to_a3m(hits_file.read_text(), remove_first_row_gaps=False)
        hits = parsers.parse_hmmsearch_a3m(query_sequence=sequence, a3m_string=a3m, skip_first=False)
        kind = templates.HmmsearchHitFeaturizer
    else:
        hits = parsers.parse_hhr(hits_file.read_text())
        kind = templates.HhsearchHitFeaturizer
    found = hits
    hits, prefiltered = prefilter(found, sequence)
    featurizer = kind(
        mmcif_dir=str(mmcif_dir), max_template_date=max_template_date.isoformat(), max_hits=MAX_TEMPLATE_HITS,
        kalign_binary_path=kalign, release_dates_path=None,
        obsolete_pdbs_path=str(obsolete) if obsolete is not None and obsolete.is_file() else None)
    try:
        result = featurizer.get_templates(query_sequence=sequence, hits=hits)
    except FileNotFoundError as exc:  # a hit pdb70 names whose mmCIF the mirror lacks, and obsolete.dat does not map
        raise DatabaseError(f"pdb_mmcif has no {Path(exc.filename).name} for a pdb70 hit: pdb70 and pdb_mmcif are "
                            f"out of step (update both, and obsolete.dat, with af2 db)") from None
    by_name = {hit.name.split()[0]: hit for hit in hits}
    used = []
    for name, sum_probs in zip(result.features["template_domain_names"], result.features["template_sum_probs"]):
        name = name.decode() if isinstance(name, bytes) else str(name)
        if not name:  # the all-gap template AlphaFold-Multimer's featuriser makes when it finds none
            continue
        pdb_id, chain = name.split("_", 1)
        parsed = mmcif_parsing.parse(file_id=pdb_id, mmcif_string=(mmcif_dir / f"{pdb_id}.cif").read_text())
        header = parsed.mmcif_object.header if parsed.mmcif_object is not None else {}
        hit = by_name.get(name)
        used.append({"pdb_id": pdb_id, "chain": chain, "release_date": header.get("release_date"),
                     "sum_probs": round(float(np.ravel(sum_probs)[0]), 3),
                     "aligned_cols": hit.aligned_cols if hit is not None else None})
    atomic.write_json(msa_dir / USED_NAME, {
        "max_template_date": max_template_date.isoformat(), "hits": len(found), "used": used,
        "skipped": prefiltered + list(result.errors) + list(result.warnings),
        "seconds": round(time.perf_counter() - t0, 3)})
    return dict(result.features), used


def used(msa_dir: Path) -> dict | None:
    """What featurize wrote (msas/templates.json), if it ran."""
    path = msa_dir / USED_NAME
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = ["HITS_NAME", "MAX_TEMPLATE_HITS", "SEQRES_HITS_NAME", "USED_NAME", "empty", "featurize", "prefilter",
           "search", "search_seqres", "used"]
