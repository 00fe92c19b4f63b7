"""Seconds of the stages around the network: HHsearch of the template search and Amber relaxation.

    python bench/stages.py hhsearch --lengths 126,455,1396 --pdb70 DB_ROOT/pdb70/pdb70 --depth 1000 --out DIR
    python bench/stages.py make-pdb70 --fasta DB_ROOT/uniref90/uniref90.fasta --count 20000 --out DIR/pdb70
    python bench/stages.py relax --pdbs 1ahsA.pdb.gz,1a28.pdb.gz,19hc.pdb.gz+1a28.pdb.gz --out DIR [--gpu]

hhsearch: af2jobs.pipeline.templates.search (AlphaFold's HHSearch wrapper, HH-suite's binary) of a synthetic
UniRef90-like MSA of `depth` rows at each length (the query and rows ~70 % identical to it, as A3M). Its time is
building the query's HMM from the MSA plus scanning pdb70: give the real pdb70 for the real figure; the demo's
pdb70 (four chains) measures the first part alone. make-pdb70 builds a pdb70-sized stand-in with HH-suite's own
tools (af2jobs.pipeline.hhsuitedb): one single-sequence HMM per sequence of a FASTA file (the real pdb70 holds
~100,000 HMMs of clustered PDB chains, each from an MSA).

relax: af2jobs.pipeline.relax.relax_one (AlphaFold's AmberRelaxation with run_alphafold's settings) of real
structures (PDB or mmCIF, gzipped or not; waters and ligands removed; A+B joins two files' chains into one
structure), on OpenMM's CPU platform, or CUDA with --gpu. Each record: residues, seconds, violations before/after.
"""

from __future__ import annotations

import dataclasses
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def synthetic_a3m(length: int, depth: int, seed: int) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    query = rng.choice(letters, length)
    rows = [">query", "".join(query)]
    for i in range(1, depth):
        row = query.copy()
        mutate = rng.random(length) < 0.3
        row[mutate] = rng.choice(letters, int(mutate.sum()))
        rows += [f">hit{i}", "".join(row)]
    return "\n".join(rows) + "\n"


def hhsearch(args) -> int:
    from af2jobs.pipeline import templates

    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            msa = Path(tmp) / "uniref90_hits.a3m"
            msa.write_text(synthetic_a3m(length, args.depth, length))
            t0 = time.perf_counter()
            hits = templates.search(Path(tmp), Path(args.pdb70), msa)
            rows.append({"length": length, "depth": args.depth, "hits": hits,
                         "seconds": round(time.perf_counter() - t0, 2), "pdb70": args.pdb70})
        print(json.dumps(rows[-1]), flush=True)
    _write(args.out, "hhsearch.json", rows)
    return 0


def make_pdb70(args) -> int:
    from af2jobs.pipeline import hhsuitedb
    from af2jobs.pipeline.databases import read_fasta

    def entries():
        for i, (name, seq) in enumerate(read_fasta(Path(args.fasta))):
            if i >= args.count:
                return
            yield f"e{i:06d}", f">{name}\n{seq}\n"

    t0 = time.perf_counter()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    hhsuitedb.build(Path(args.out), entries())
    print(json.dumps({"entries": args.count, "seconds": round(time.perf_counter() - t0, 1), "prefix": args.out}))
    return 0


def load(spec: str):
    """A Protein of one file's chains, or of several files' joined ('a.pdb+b.pdb', chains renamed apart)."""
    import gemmi
    import numpy as np
    from alphafold.common import protein

    merged = gemmi.Structure()
    merged.add_model(gemmi.Model("1"))
    names = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    edge = None  # each further file is moved along x to lie 10 A beyond the ones before: no overlap between them
    for part in spec.split("+"):
        st = gemmi.read_structure(part)
        st.setup_entities()
        st.remove_ligands_and_waters()
        st.remove_hydrogens()
        st.remove_alternative_conformations()
        xs = [a.pos.x for ch in st[0] for r in ch for a in r]
        shift = 0.0 if edge is None else edge + 10.0 - min(xs)
        st[0].transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(shift, 0, 0)))
        edge = max(xs) + shift
        for chain in st[0]:
            if len(chain.get_polymer()) == 0:
                continue
            chain.name = next(names)
            merged[0].add_chain(chain)
    merged.setup_entities()
    # A crystal structure lacks some side-chain atoms, which a prediction never does (and relax requires): PDBFixer
    # adds them (not missing loops), as AlphaFold's own cleanup does before minimising.
    import io

    import pdbfixer
    from openmm import app

    fixer = pdbfixer.PDBFixer(pdbfile=io.StringIO(merged.make_pdb_string()))
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    out = io.StringIO()
    app.PDBFile.writeFile(fixer.topology, fixer.positions, out, keepIds=True)
    prot = protein.from_pdb_string(out.getvalue())
    # pLDDT in the B-factor column, as a prediction has it (relax carries it over).
    return dataclasses.replace(prot, b_factors=np.full_like(prot.b_factors, 90.0))


def relax(args) -> int:
    from af2jobs.pipeline import relax as relax_mod

    rows = []
    for spec in args.pdbs.split(","):
        prot = load(spec)
        done = relax_mod.relax_one(Path(spec).name, prot, use_gpu=args.gpu)
        rows.append({"structure": spec.rsplit("/", 1)[-1] if "+" not in spec else
                     "+".join(Path(p).name for p in spec.split("+")),
                     "residues": int(prot.aatype.shape[0]), "chains": int(len(set(prot.chain_index.tolist()))),
                     **done.summary()})
        print(json.dumps(rows[-1]), flush=True)
    _write(args.out, f"relax_{'cuda' if args.gpu else 'cpu'}.json", rows)
    return 0


def _write(out: str, name: str, rows: list) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / name).write_text(json.dumps(rows, indent=1) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hhsearch")
    h.add_argument("--lengths", required=True)
    h.add_argument("--pdb70", required=True, help="the pdb70 ffindex prefix (DB_ROOT/pdb70/pdb70)")
    h.add_argument("--depth", type=int, default=1000)
    h.add_argument("--out", default="bench-out")
    m = sub.add_parser("make-pdb70")
    m.add_argument("--fasta", required=True)
    m.add_argument("--count", type=int, default=20000)
    m.add_argument("--out", required=True, help="the new database's prefix")
    r = sub.add_parser("relax")
    r.add_argument("--pdbs", required=True, help="comma-separated structures; A+B joins two into one")
    r.add_argument("--gpu", action="store_true", help="OpenMM's CUDA platform")
    r.add_argument("--out", default="bench-out")
    args = p.parse_args()
    return {"hhsearch": hhsearch, "relax": relax, "make-pdb70": make_pdb70}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
