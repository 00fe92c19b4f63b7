"""MSA benchmark at a scale the demo database does not reach: jackhmmer (pyhmmer, AlphaFold's options) against
MMseqs2 (af2jobs' msa_mode mmseqs2: its settings, its index) on a synthetic protein database with real family
structure, generated on the machine that runs it (never committed).

The database: `--families` real seed sequences (the demo's UniProt sequences, or any FASTA) each evolved along a
random tree into `--members` homologs (substitutions drawn from the background frequencies, short indels;
branch lengths chosen so members share 20-90 % identity with their seed), then background up to each of `--sizes`
in all: the file's other real proteins, each copy 30 % mutated (`--background real`), or random sequences of
UniProt composition (`--background random`). Queries are seeds; a family's members are its true homologs.

Per tool: seconds per query (one query alone) and per query in a batch (`--batch` queries in one call: one
MMseqs2 run, one pyhmmer call), the process' peak memory, hits, the recall of the true homologs and, for MMseqs2,
the recall of jackhmmer's hits. What the figures say about AlphaFold's real database sizes is extrapolated
(search time linear in the database's residues) and labelled as such in the output.

    python bench/msa.py --sizes 200000,1000000 --families 200 --members 300 --batch 100 --cpus 16 --out DIR
    python bench/msa.py --sizes 5000,20000 --families 5 --members 50 --batch 5 --cpus 2 --out DIR      # a check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

AA = "ACDEFGHIKLMNPQRSTVWY"
# UniProt's amino-acid composition (percent), for substitutions and background sequences.
FREQ = np.array([8.25, 1.37, 5.45, 6.75, 3.86, 7.07, 2.27, 5.96, 5.84, 9.66, 2.42, 4.06, 4.70, 3.93, 5.53, 6.56,
                 5.34, 6.87, 1.08, 2.92])
FREQ = FREQ / FREQ.sum()
# Real database sizes in residues, for the labelled extrapolation (UniRef90 2022: ~144 M sequences x ~270 aa;
# MGnify 2022_05: ~623 M x ~160; BFD: ~2.2 G x ~120).
REAL_RESIDUES = {"uniref90": 3.9e10, "mgnify": 1.0e11, "bfd": 2.6e11}


def _proteins(fasta: Path) -> list[str]:
    from af2jobs.pipeline.databases import read_fasta

    return [s for _, s in read_fasta(fasta) if 100 <= len(s) <= 500 and set(s) <= set(AA)]


def _seeds(fasta: Path, n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """`n` seed proteins, and the other proteins of the file (a real background)."""
    seqs = _proteins(fasta)
    picked = set(rng.choice(len(seqs), size=min(n, len(seqs)), replace=False).tolist())
    return [seqs[i] for i in sorted(picked)], [s for i, s in enumerate(seqs) if i not in picked]


def _mutate(seq: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = seq.copy()
    hit = rng.random(len(out)) < rate
    out[hit] = rng.choice(20, size=int(hit.sum()), p=FREQ)
    for _ in range(rng.poisson(rate * len(out) / 20)):  # short indels, about one per 20 substitutions
        at = int(rng.integers(0, len(out)))
        if rng.random() < 0.5:
            out = np.delete(out, slice(at, at + int(rng.integers(1, 4))))
        else:
            out = np.insert(out, at, rng.choice(20, size=int(rng.integers(1, 4)), p=FREQ))
    return out


def family(seed: str, members: int, rng: np.random.Generator) -> list[str]:
    """`members` sequences evolved from `seed` along a random binary tree (20-90 % identity to the seed)."""
    root = np.array([AA.index(c) for c in seed])
    nodes = [(root, 0.0)]
    leaves: list[np.ndarray] = []
    while len(leaves) < members:
        parent, depth = nodes[int(rng.integers(0, len(nodes)))]
        rate = float(rng.uniform(0.02, 0.15))
        if depth + rate > 0.8:  # the divergence cap: no member below ~20 % identity
            rate = max(0.0, 0.8 - depth)
        child = _mutate(parent, rate, rng)
        nodes.append((child, depth + rate))
        leaves.append(child)
    return ["".join(AA[i] for i in leaf) for leaf in leaves]


def build_database(args, out: Path) -> tuple[Path, dict[str, str], dict[str, set[str]]]:
    rng = np.random.default_rng(args.seed)
    seeds, others = _seeds(Path(args.seeds_fasta), args.families, rng)
    fasta = out / "synthetic.fasta"
    truth: dict[str, set[str]] = {}
    queries: dict[str, str] = {}
    n = residues = 0
    lengths = [len(s) for s in seeds]
    with fasta.open("w") as fh:
        for f, seed in enumerate(seeds):
            queries[f"fam{f}"] = seed
            names = set()
            for m, seq in enumerate(family(seed, args.members, rng)):
                name = f"fam{f}_m{m}"
                fh.write(f">{name}\n{seq}\n")
                names.add(name)
                n += 1
                residues += len(seq)
            truth[f"fam{f}"] = names
        while n < args.size:
            if args.background == "real":  # real unrelated proteins, each copy 30 % mutated so none repeats
                base = np.array([AA.index(c) for c in others[int(rng.integers(0, len(others)))]])
                seq = "".join(AA[i] for i in _mutate(base, 0.3, rng))
            else:
                seq = "".join(AA[i] for i in rng.choice(20, size=int(rng.choice(lengths)), p=FREQ))
            fh.write(f">bg{n}\n{seq}\n")
            n += 1
            residues += len(seq)
    (out / "database.json").write_text(json.dumps({"sequences": n, "residues": residues, "families": len(seeds),
                                                   "members": args.members, "background": args.background}))
    return fasta, queries, truth


def _peak_mib(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def run_jackhmmer(fasta: Path, queries: dict[str, str], cpus: int) -> tuple[dict[str, set[str]], float]:
    import pyhmmer

    from af2jobs.pipeline.msa import JACKHMMER_OPTIONS

    alphabet = pyhmmer.easel.Alphabet.amino()
    with pyhmmer.easel.SequenceFile(str(fasta), digital=True, alphabet=alphabet) as fh:
        targets = fh.read_block()
    digital = [pyhmmer.easel.TextSequence(name=name.encode(), sequence=seq).digitize(alphabet)
               for name, seq in queries.items()]
    t0 = time.perf_counter()
    results = list(pyhmmer.hmmer.jackhmmer(digital, targets, cpus=cpus, checkpoints=False, **JACKHMMER_OPTIONS))
    seconds = time.perf_counter() - t0
    hits = {}
    for name, result in zip(queries, results):
        hits[name] = {(h.name.decode() if isinstance(h.name, bytes) else h.name) for h in result.hits if h.included}
    return hits, seconds


def run_mmseqs(prefix: Path, queries: dict[str, str], cpus: int, work: Path) -> tuple[dict[str, set[str]], float]:
    from af2jobs.pipeline import mmseqs

    dirs = {name: work / name for name in queries}
    t0 = time.perf_counter()
    mmseqs.search(queries, [("mmseqs_uniref", prefix)], dirs, cpus)
    seconds = time.perf_counter() - t0
    hits = {}
    for name in queries:
        text = (dirs[name] / mmseqs.OUTPUT_NAMES["mmseqs_uniref"]).read_text()
        hits[name] = {line[1:].split()[0] for line in text.splitlines()[2:] if line.startswith(">")}
    return hits, seconds


def _recall(found: dict[str, set[str]], truth: dict[str, set[str]]) -> float:
    wanted = sum(len(truth[q]) for q in found)
    return round(sum(len(found[q] & truth[q]) for q in found) / wanted, 4) if wanted else 0.0


def measure(args, size: int, out: Path) -> dict:
    """One database of `size` sequences: build it, index it, run both tools alone and in a batch."""
    from af2jobs.pipeline import mmseqs

    with tempfile.TemporaryDirectory(dir=out) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        fasta, queries, truth = build_database(argparse.Namespace(**{**vars(args), "size": size}), tmp)
        db = json.loads((tmp / "database.json").read_text())
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prefix = mmseqs.build(fasta, tmp / "mmseqs" / "db", index=True, cpus=args.cpus)
        index_s = time.perf_counter() - t0
        batch = dict(list(queries.items())[: args.batch])
        one = dict(list(queries.items())[:1])
        rows = {}
        for tool in ("jackhmmer", "mmseqs2"):
            def run(qs: dict[str, str], tag: str) -> tuple[dict[str, set[str]], float]:
                if tool == "jackhmmer":
                    return run_jackhmmer(fasta, qs, args.cpus)
                return run_mmseqs(prefix, qs, args.cpus, tmp / f"{tool}-{tag}")
            _, single_s = run(one, "one")
            hits, batch_s = run(batch, "batch")
            rows[tool] = {"one_query_s": round(single_s, 2), "batch_s": round(batch_s, 2),
                          "per_query_in_batch_s": round(batch_s / len(batch), 3),
                          "mean_hits": round(sum(map(len, hits.values())) / len(hits), 1),
                          "recall_of_true_homologs": _recall(hits, truth), "_hits": hits}
        rows["mmseqs2"]["recall_of_jackhmmer_hits"] = _recall(rows["mmseqs2"]["_hits"], rows["jackhmmer"]["_hits"])
        for row in rows.values():
            row.pop("_hits")
    speedup = rows["jackhmmer"]["per_query_in_batch_s"] / max(rows["mmseqs2"]["per_query_in_batch_s"], 1e-9)
    return {"database": db, "cpus": args.cpus, "batch": len(batch), "generate_s": round(generate_s, 1),
            "mmseqs_createdb_and_index_s": round(index_s, 1), "tools": rows,
            "mmseqs2_speedup_per_query_in_batch": round(speedup, 1),
            "peak_mib_so_far": {"this_process (pyhmmer)": _peak_mib(resource.RUSAGE_SELF),
                                "children (mmseqs)": _peak_mib(resource.RUSAGE_CHILDREN)}}


def extrapolate(runs: list[dict]) -> dict:
    """Per-query seconds (in a batch) at AlphaFold's real database sizes, from the slope between the two largest
    databases measured: t = a + b x residues. EXTRAPOLATED, not measured."""
    if len(runs) < 2:
        return {"note": "give two --sizes or more to extrapolate"}
    small, large = sorted(runs, key=lambda r: r["database"]["residues"])[-2:]
    out = {}
    for tool in large["tools"]:
        t1, t2 = small["tools"][tool]["per_query_in_batch_s"], large["tools"][tool]["per_query_in_batch_s"]
        r1, r2 = small["database"]["residues"], large["database"]["residues"]
        slope = max((t2 - t1) / (r2 - r1), 0.0)
        out[tool] = {name: round(t2 + slope * (residues - r2), 1) for name, residues in REAL_RESIDUES.items()}
    return {"EXTRAPOLATED_per_query_s": out,
            "how": "linear in the database's residues through the two largest sizes measured; not measured"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="50000,200000", help="database sizes in sequences, comma-separated")
    p.add_argument("--families", type=int, default=200)
    p.add_argument("--members", type=int, default=300, help="homologs per family")
    p.add_argument("--batch", type=int, default=100, help="queries searched in one call")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", choices=["random", "real"], default="real",
                   help="real: the seed file's other proteins, each copy 30 %% mutated; random: UniProt composition")
    p.add_argument("--seeds-fasta", default=str(Path.home() / ".local/share/af2jobs/databases/uniref90/uniref90.fasta"))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in (int(x) for x in args.sizes.split(",")):
        runs.append(measure(args, size, out))
        print(json.dumps(runs[-1]), flush=True)
    result = {"runs": runs, **extrapolate(runs)}
    (out / "msa_bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
