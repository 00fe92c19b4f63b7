"""MSA benchmark at a scale the demo database does not reach: jackhmmer (pyhmmer, AlphaFold's options) and HHblits
(AlphaFold 2.3's options, on an HH-suite database built here) against MMseqs2 (af2jobs' msa_mode mmseqs2: its
settings, its index) on a synthetic protein database with real family structure, generated on the machine that
runs it (never committed).

The database: `--families` real seed sequences (the demo's UniProt sequences, or any FASTA) each evolved along a
random tree into `--members` homologs (substitutions drawn from the background frequencies, short indels;
branch lengths chosen so members share 20-90 % identity with their seed), then background up to each of `--sizes`
in all: the file's other real proteins, each copy 30 % mutated (`--background real`), or random sequences of
UniProt composition (`--background random`). Queries are seeds; a family's members are its true homologs.

The HH-suite database, as UniRef30 is made: the database's first `--hh-size` sequences (every family, then
background) clustered at 30 % identity and 80 % coverage (`mmseqs cluster`), one A3M per cluster
(`mmseqs result2msa`, an ffindex), and the clusters' column-state sequences (`cstranslate`, HH-suite's recipe).
No `_hhm` part: hhblits reads the A3Ms. Its build is timed apart from the searches.

Per tool and per core count of `--cpus-list`: seconds of one query alone and per query in a batch (`--batch`
queries in one call: one MMseqs2 run, one pyhmmer call, one hhblits_omp run over the queries), the peak memory of
the process that searched (its children included), hits, the recall of the true homologs and the recall of
jackhmmer's hits (for HHblits, of those its database holds). What the figures say about AlphaFold's real database
sizes is extrapolated (search time linear in the database's size) and labelled as such in the output.
msa_bench.json is rewritten after every measurement, so a run stopped early keeps what it finished.

    python bench/msa.py --sizes 1000000 --hh-size 100000 --families 100 --members 300 --batch 100 \
        --cpus-list 16,8 --out DIR
    python bench/msa.py --sizes 5000,20000 --hh-size 5000 --families 5 --members 50 --batch 5 --cpus-list 2 \
        --out DIR                                                                                    # a check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

AA = "ACDEFGHIKLMNPQRSTVWY"
_CODE = np.full(256, 255, dtype=np.uint8)
_CODE[np.frombuffer(AA.encode(), dtype=np.uint8)] = np.arange(20, dtype=np.uint8)
_LETTER = np.frombuffer(AA.encode(), dtype=np.uint8)
# UniProt's amino-acid composition (percent), for substitutions and background sequences.
FREQ = np.array([8.25, 1.37, 5.45, 6.75, 3.86, 7.07, 2.27, 5.96, 5.84, 9.66, 2.42, 4.06, 4.70, 3.93, 5.53, 6.56,
                 5.34, 6.87, 1.08, 2.92])
FREQ = FREQ / FREQ.sum()
# Real database sizes, for the labelled extrapolation: residues of the sequence databases (UniRef90 2022: ~144 M
# sequences x ~270 aa; MGnify 2022_05: ~623 M x ~160), clusters (HH-suite entries) of the HH-suite databases
# (BFD: 65,983,866 clusters of 2.2 G sequences; UniRef30 2021_03: about 29 M clusters). af2jobs.cost holds the same.
REAL_RESIDUES = {"uniref90": 3.9e10, "mgnify": 1.0e11}
REAL_CLUSTERS = {"bfd": 6.6e7, "uniref30": 2.9e7}
# AlphaFold 2.3's hhblits call (alphafold/data/tools/hhblits.py defaults; -p 20 and -Z 500 are hhblits' own).
HHBLITS_OPTIONS = ["-n", "3", "-e", "0.001", "-maxseq", "1000000", "-realign_max", "100000", "-maxfilt", "100000",
                   "-min_prefilter_hits", "1000"]
# UniRef30's clustering (Uniclust30: 30 % identity, 80 % coverage) and HH-suite's column-state translation.
HH_CLUSTER = ["--min-seq-id", "0.3", "-c", "0.8"]
CSTRANSLATE = ["-f", "-x", "0.3", "-c", "4", "-I", "a3m", "-b"]
# The order they run in: jackhmmer's hits are the others' reference. mmseqs2_gpu: MMseqs2's GPU build (--mmseqs-gpu)
# on the padded database, each call loading it; mmseqs2_gpuserver: the same through `mmseqs gpuserver`, which holds
# the database on the GPU (its first query pays the load, the batch after it does not).
TOOLS = ("jackhmmer", "mmseqs2", "hhblits", "mmseqs2_gpu", "mmseqs2_gpuserver")


def _encode(seq: str) -> np.ndarray:
    return _CODE[np.frombuffer(seq.encode(), dtype=np.uint8)]


def _decode(codes: np.ndarray) -> str:
    return _LETTER[codes].tobytes().decode()


def _seeds(fasta: Path, n: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """`n` seed proteins, and the other proteins of the file (a real background)."""
    from af2jobs.pipeline.databases import read_fasta

    seqs = [s for _, s in read_fasta(fasta) if 100 <= len(s) <= 500 and set(s) <= set(AA)]
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
            out = np.insert(out, at, rng.choice(20, size=int(rng.integers(1, 4)), p=FREQ).astype(np.uint8))
    return out


def family(seed: str, members: int, rng: np.random.Generator) -> list[str]:
    """`members` sequences evolved from `seed` along a random binary tree (20-90 % identity to the seed)."""
    nodes = [(_encode(seed), 0.0)]
    leaves: list[np.ndarray] = []
    while len(leaves) < members:
        parent, depth = nodes[int(rng.integers(0, len(nodes)))]
        rate = float(rng.uniform(0.02, 0.15))
        if depth + rate > 0.8:  # the divergence cap: no member below ~20 % identity
            rate = max(0.0, 0.8 - depth)
        child = _mutate(parent, rate, rng)
        nodes.append((child, depth + rate))
        leaves.append(child)
    return [_decode(leaf) for leaf in leaves]


_BACKGROUND: dict = {}  # set before the pool forks: the real proteins and the seeds' lengths


def _background(job: tuple[int, int, int, str]) -> tuple[str, int]:
    """FASTA text of `count` background sequences named from `start` (one chunk, its own random stream)."""
    start, count, seed, kind = job
    rng = np.random.default_rng([seed, start])
    others, lengths = _BACKGROUND["others"], _BACKGROUND["lengths"]
    parts, residues = [], 0
    for n in range(start, start + count):
        if kind == "real":  # real unrelated proteins, each copy 30 % mutated so none repeats
            seq = _decode(_mutate(others[int(rng.integers(0, len(others)))], 0.3, rng))
        else:
            seq = _decode(rng.choice(20, size=int(rng.choice(lengths)), p=FREQ).astype(np.uint8))
        parts.append(f">bg{n}\n{seq}\n")
        residues += len(seq)
    return "".join(parts), residues


def build_database(args, size: int, out: Path, cpus: int) -> tuple[Path, dict[str, str], dict[str, set[str]], dict]:
    """The synthetic FASTA (families first, then background), the queries and each query's true homologs."""
    rng = np.random.default_rng(args.seed)
    seeds, others = _seeds(Path(args.seeds_fasta), args.families, rng)
    fasta = out / "synthetic.fasta"
    truth: dict[str, set[str]] = {}
    queries: dict[str, str] = {}
    n = residues = 0
    with fasta.open("w") as fh:
        for f, seed in enumerate(seeds):
            queries[f"fam{f}"] = seed
            names = set()
            for m, seq in enumerate(family(seed, args.members, rng)):
                fh.write(f">fam{f}_m{m}\n{seq}\n")
                names.add(f"fam{f}_m{m}")
                residues += len(seq)
            n += args.members
            truth[f"fam{f}"] = names
        _BACKGROUND.update(others=[_encode(s) for s in others], lengths=[len(s) for s in seeds])
        chunk = 20000
        jobs = [(s, min(chunk, size - s), args.seed, args.background) for s in range(n, size, chunk)]
        with multiprocessing.get_context("fork").Pool(cpus) as pool:
            for text, count in pool.imap(_background, jobs):
                fh.write(text)
                residues += count
    db = {"sequences": max(n, size), "residues": residues, "families": len(seeds), "members": args.members,
          "background": args.background}
    return fasta, queries, truth, db


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not on PATH (bench/msa_device.sh puts .benchtools' tools there)")
    return found


def _run(*cmd: str | Path, env: dict | None = None) -> None:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:2]))} failed ({result.returncode}): {result.stderr[-2000:]}")


def _head_fasta(fasta: Path, n: int, out: Path) -> tuple[Path, set[str]]:
    """The first `n` records of a FASTA file, and their names."""
    names: set[str] = set()
    with fasta.open() as src, out.open("w") as dst:
        for line in src:
            if line.startswith(">"):
                if len(names) == n:
                    break
                names.add(line[1:].split()[0])
            dst.write(line)
    return out, names


def build_hhsuite(fasta: Path, size: int, work: Path, cpus: int) -> tuple[Path, set[str], dict]:
    """An HH-suite database (<prefix>_a3m, <prefix>_cs219) of the first `size` sequences of `fasta`."""
    mmseqs, cstranslate = _tool("mmseqs"), _tool("cstranslate")
    work.mkdir(parents=True)
    sub, names = _head_fasta(fasta, size, work / "hh.fasta")
    env = {**os.environ, "MMSEQS_FORCE_MERGE": "1"}  # one data file, as an ffindex is
    t0 = time.perf_counter()
    _run(mmseqs, "createdb", sub, work / "seq", "-v", "1", env=env)
    _run(mmseqs, "cluster", work / "seq", work / "clu", work / "tmp", "--threads", cpus, *HH_CLUSTER, "-v", "1",
         env=env)
    cluster_s = time.perf_counter() - t0
    _run(mmseqs, "result2msa", work / "seq", work / "seq", work / "clu", work / "msa", "--msa-format-mode", "5",
         "--threads", cpus, "-v", "1", env=env)
    prefix = work / "hhdb"
    Path(f"{prefix}_a3m.ffdata").symlink_to(work / "msa")
    entries = sorted((work / "msa.index").read_text().splitlines(), key=lambda line: line.split("\t")[0])
    Path(f"{prefix}_a3m.ffindex").write_text("\n".join(entries) + "\n")
    msa_s = time.perf_counter() - t0 - cluster_s
    # cstranslate is one thread per process here: a part of the index per core, run side by side, then joined.
    parts = [entries[i::cpus] for i in range(cpus) if entries[i::cpus]]
    procs = []
    for i, part in enumerate(parts):
        Path(f"{work}/p{i}_a3m.ffdata").symlink_to(work / "msa")
        Path(f"{work}/p{i}_a3m.ffindex").write_text("\n".join(part) + "\n")
        procs.append(subprocess.Popen([cstranslate, *CSTRANSLATE, "-i", f"{work}/p{i}_a3m", "-o", f"{work}/p{i}_cs219"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"cstranslate failed: {proc.stderr.read().decode()[-2000:]}")
    _join_ffindex([work / f"p{i}_cs219" for i in range(len(parts))], Path(f"{prefix}_cs219"))
    cs_s = time.perf_counter() - t0 - cluster_s - msa_s
    columns = sum(int(line.split("\t")[2]) for line in Path(f"{prefix}_cs219.ffindex").read_text().splitlines())
    return prefix, names, {"sequences": len(names), "clusters": len(entries), "cs219_bytes": columns,
                           "cluster_s": round(cluster_s, 1), "result2msa_s": round(msa_s, 1),
                           "cstranslate_s": round(cs_s, 1)}


def _join_ffindex(parts: list[Path], out: Path) -> None:
    """One ffindex (data + sorted index) of several, as ffindex_build -a would make it."""
    index, offset = [], 0
    with open(f"{out}.ffdata", "wb") as data:
        for part in parts:
            blob = Path(f"{part}.ffdata").read_bytes()
            data.write(blob)
            for line in Path(f"{part}.ffindex").read_text().splitlines():
                name, at, length = line.split("\t")
                index.append((name, int(at) + offset, int(length)))
            offset += len(blob)
    Path(f"{out}.ffindex").write_text("".join(f"{n}\t{a}\t{l}\n" for n, a, l in sorted(index)))


def run_jackhmmer(fasta: Path, queries: dict[str, str], cpus: int, work: Path) -> dict[str, set[str]]:
    import pyhmmer

    from af2jobs.pipeline.msa import JACKHMMER_OPTIONS

    alphabet = pyhmmer.easel.Alphabet.amino()
    with pyhmmer.easel.SequenceFile(str(fasta), digital=True, alphabet=alphabet) as fh:
        targets = fh.read_block()
    digital = [pyhmmer.easel.TextSequence(name=name.encode(), sequence=seq).digitize(alphabet)
               for name, seq in queries.items()]
    results = pyhmmer.hmmer.jackhmmer(digital, targets, cpus=cpus, checkpoints=False, **JACKHMMER_OPTIONS)
    return {name: {(h.name.decode() if isinstance(h.name, bytes) else h.name) for h in result.hits if h.included}
            for name, result in zip(queries, results)}


def _a3m_names(text: str) -> set[str]:
    return {line[1:].split()[0] for line in text.splitlines() if line.startswith(">")}


def run_hhblits(prefix: Path, queries: dict[str, str], cpus: int, work: Path) -> dict[str, set[str]]:
    """One query: hhblits as AlphaFold calls it. Several: hhblits_omp over an ffindex of the queries (one query
    per thread, HH-suite's own batch)."""
    work.mkdir(parents=True)
    if len(queries) == 1:
        (name, seq), = queries.items()
        (work / "q.fasta").write_text(f">{name}\n{seq}\n")
        _run(_tool("hhblits"), "-i", work / "q.fasta", "-cpu", cpus, "-oa3m", work / "q.a3m", "-o", "/dev/null",
             *HHBLITS_OPTIONS, "-d", prefix, "-v", "0")
        return {name: _a3m_names((work / "q.a3m").read_text()) - {name}}
    entries = [(name, f">{name}\n{seq}\n".encode() + b"\0") for name, seq in sorted(queries.items())]
    with open(work / "q.ffdata", "wb") as data:
        data.write(b"".join(blob for _, blob in entries))
    offsets = np.cumsum([0] + [len(blob) for _, blob in entries])
    (work / "q.ffindex").write_text("".join(f"{n}\t{o}\t{len(b)}\n" for (n, b), o in zip(entries, offsets)))
    _run(_tool("hhblits_omp"), "-i", work / "q", "-cpu", cpus, "-oa3m", work / "out_a3m", "-o", "/dev/null",
         *HHBLITS_OPTIONS, "-d", prefix, "-v", "0")
    found = {}
    data = (work / "out_a3m.ffdata").read_bytes()
    for line in (work / "out_a3m.ffindex").read_text().splitlines():
        name, at, length = line.split("\t")
        found[name] = _a3m_names(data[int(at): int(at) + int(length)].decode().strip("\0")) - {name}
    return found


def run_mmseqs(prefix: Path, queries: dict[str, str], cpus: int, work: Path, gpu: str = "") -> dict[str, set[str]]:
    """msa_mode mmseqs2's search (af2jobs.pipeline.mmseqs) of a sequence database; `gpu`: "" on the CPU, "gpu" on
    the GPU (the binary AF2_MMSEQS names), "server" through a running gpuserver."""
    from af2jobs.pipeline import mmseqs

    dirs = {name: work / name for name in queries}
    mmseqs.search(queries, [("mmseqs_uniref", prefix)], dirs, cpus, gpu=bool(gpu), server=gpu == "server")
    return {name: _a3m_names((dirs[name] / mmseqs.OUTPUT_NAMES["mmseqs_uniref"]).read_text()) - {"query"}
            for name in queries}


def run_mmseqs_gpu(prefix: Path, queries: dict[str, str], cpus: int, work: Path) -> dict[str, set[str]]:
    return run_mmseqs(prefix, queries, cpus, work, gpu="gpu")


def run_mmseqs_server(prefix: Path, queries: dict[str, str], cpus: int, work: Path) -> dict[str, set[str]]:
    return run_mmseqs(prefix, queries, cpus, work, gpu="server")


class GpuServer:
    """`mmseqs gpuserver` holding a padded database on the GPU, for the searches run while it is up."""

    def __init__(self, binary: str, prefix: Path, log: Path):
        self.proc = subprocess.Popen([binary, "gpuserver", str(prefix), "--max-seqs", "10000", "--prefilter-mode", "1",
                                      "--db-load-mode", "0"], stdout=log.open("w"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def isolated(search, *args) -> tuple[dict[str, set[str]], float, float]:
    """Run `search(*args)` in a child process: its hits, its seconds, and its peak memory in MiB (the child's and
    its own children's, from wait4), so that each tool's memory is its own."""
    out = Path(args[-1]).with_suffix(".hits.json")
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            hits = search(*args)
            out.write_text(json.dumps({q: sorted(h) for q, h in hits.items()}))
        except BaseException as exc:  # the parent reports it; the child must not return into the parent's code
            out.with_suffix(".error").write_text(repr(exc))
            code = 1
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        error = out.with_suffix(".error")
        raise RuntimeError(f"{search.__name__} failed: {error.read_text() if error.exists() else status}")
    hits = {q: set(h) for q, h in json.loads(out.read_text()).items()}
    return hits, seconds, round(usage.ru_maxrss / 1024, 1)


def _recall(found: dict[str, set[str]], wanted: dict[str, set[str]], within: set[str] | None = None) -> float:
    pairs = {q: (wanted[q] & within if within is not None else wanted[q]) for q in found}
    total = sum(len(p) for p in pairs.values())
    return round(sum(len(found[q] & pairs[q]) for q in found) / total, 4) if total else 0.0


class Report:
    """msa_bench.json, rewritten after every step (a run stopped by its time limit keeps what it finished)."""

    def __init__(self, path: Path, settings: dict):
        self.path, self.data = path, {"settings": settings, "runs": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def log(self, what: str, value) -> None:
        print(json.dumps({what: value}), flush=True)
        self.save()


def _row(hits: dict[str, set[str]], one_s: float, batch_s: float, truth: dict[str, set[str]], peak: float) -> dict:
    return {"one_query_s": round(one_s, 2), "batch_s": round(batch_s, 2),
            "per_query_in_batch_s": round(batch_s / len(hits), 3), "peak_mib": peak,
            "mean_hits": round(sum(map(len, hits.values())) / len(hits), 1),
            "recall_of_true_homologs": _recall(hits, truth)}


def measure(args, size: int, work: Path, report: Report) -> None:
    """One database of `size` sequences: generate it, build both indexes, run every tool at every core count."""
    from af2jobs.pipeline import mmseqs

    cpus_list = [int(c) for c in args.cpus_list.split(",")]
    run: dict = {"size": size, "batch": args.batch, "build": {}, "cpus": {}}
    report.data["runs"].append(run)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    fasta, queries, truth, run["database"] = build_database(args, size, work, max(cpus_list))
    run["build"]["generate_s"] = round(time.perf_counter() - t0, 1)
    report.log("database", run["database"])
    t0 = time.perf_counter()
    prefix = mmseqs.sequence_db(fasta, work / "mmseqs" / "db", index=True, cpus=max(cpus_list))
    run["build"]["mmseqs_createdb_and_index_s"] = round(time.perf_counter() - t0, 1)
    report.log("build", run["build"])
    tools = [t for t in TOOLS if t in args.tools.split(",")]
    hh_names: set[str] = set()
    hh_truth, hh_prefix = truth, None
    if "hhblits" in tools:
        t0 = time.perf_counter()
        hh_prefix, hh_names, run["hhsuite_database"] = build_hhsuite(fasta, args.hh_size, work / "hhsuite",
                                                                     max(cpus_list))
        run["build"]["hhsuite_s"] = round(time.perf_counter() - t0, 1)
        hh_truth = {q: t & hh_names for q, t in truth.items()}
        report.log("hhsuite_database", run["hhsuite_database"])
    gpu_prefix = None
    if {"mmseqs2_gpu", "mmseqs2_gpuserver"} & set(tools):
        t0 = time.perf_counter()
        gpu_prefix = work / "mmseqs-gpu" / "db"
        gpu_prefix.parent.mkdir()
        _run(args.mmseqs_gpu, "makepaddedseqdb", prefix, gpu_prefix, "--threads", max(cpus_list), "-v", "1")
        run["build"]["mmseqs_makepaddedseqdb_s"] = round(time.perf_counter() - t0, 1)
        report.log("build", run["build"])
    batch = dict(list(queries.items())[: args.batch])
    one = dict(list(queries.items())[:1])
    jack_batch = dict(list(queries.items())[: args.jackhmmer_batch or args.batch])
    searches = {"jackhmmer": (run_jackhmmer, fasta), "hhblits": (run_hhblits, hh_prefix),
                "mmseqs2": (run_mmseqs, prefix), "mmseqs2_gpu": (run_mmseqs_gpu, gpu_prefix),
                "mmseqs2_gpuserver": (run_mmseqs_server, gpu_prefix)}
    for cpus in cpus_list:
        rows = run["cpus"][str(cpus)] = {}
        jack: dict[str, set[str]] = {}
        for tool in tools:
            search, db = searches[tool]
            tag = work / f"{tool}-{cpus}"
            if tool.startswith("mmseqs2_gpu"):
                os.environ["AF2_MMSEQS"] = args.mmseqs_gpu
            server = GpuServer(args.mmseqs_gpu, gpu_prefix, work / "gpuserver.log") if tool == "mmseqs2_gpuserver" \
                else None
            try:
                _, one_s, peak_one = isolated(search, db, one, cpus, tag.with_name(tag.name + "-one"))
                hits, batch_s, peak = isolated(search, db, jack_batch if tool == "jackhmmer" else batch, cpus,
                                               tag.with_name(tag.name + "-batch"))
            finally:
                os.environ.pop("AF2_MMSEQS", None)
                if server is not None:
                    server.stop()
            rows[tool] = _row(hits, one_s, batch_s, hh_truth if tool == "hhblits" else truth, max(peak, peak_one))
            if tool == "mmseqs2_gpuserver":
                rows[tool]["note"] = "one_query_s is the first query after the server started: it pays the load"
            if tool == "jackhmmer":
                jack = hits
            elif jack:
                within = hh_names if tool == "hhblits" else None
                rows[tool]["recall_of_jackhmmer_hits"] = _recall({q: h for q, h in hits.items() if q in jack}, jack,
                                                                 within)
            report.log(f"{tool} size {size} cpus {cpus}", rows[tool])
        slow = sum(rows[t]["per_query_in_batch_s"] for t in ("jackhmmer", "hhblits") if t in rows)
        for tool in ("mmseqs2", "mmseqs2_gpu", "mmseqs2_gpuserver"):
            if tool in rows and slow:
                key = f"{'+'.join(t for t in ('jackhmmer', 'hhblits') if t in rows)}_over_{tool}_per_query_in_batch"
                rows[key] = round(slow / max(rows[tool]["per_query_in_batch_s"], 1e-9), 2)
                report.log(key, rows[key])
    shutil.rmtree(work)


def extrapolate(runs: list[dict]) -> dict:
    """Per-query seconds (in a batch) at AlphaFold's real database sizes, linear in the database's size through
    the largest run measured (sequence residues for jackhmmer and MMseqs2, clusters for HHblits). EXTRAPOLATED."""
    done = [r for r in runs if r.get("cpus") and all(t in rows for rows in r["cpus"].values()
                                                     for t in ("jackhmmer", "mmseqs2", "hhblits"))]
    if not done:
        return {"note": "no complete run to extrapolate from"}
    large = max(done, key=lambda r: r["database"]["residues"])
    out = {}
    for cpus, rows in large["cpus"].items():
        per_m = {"jackhmmer": rows["jackhmmer"]["per_query_in_batch_s"] / (large["database"]["residues"] / 1e6),
                 "mmseqs2": rows["mmseqs2"]["per_query_in_batch_s"] / (large["database"]["residues"] / 1e6),
                 "hhblits": rows["hhblits"]["per_query_in_batch_s"] / (large["hhsuite_database"]["clusters"] / 1e6)}
        jack = per_m["jackhmmer"] * sum(REAL_RESIDUES.values()) / 1e6
        hh = per_m["hhblits"] * sum(REAL_CLUSTERS.values()) / 1e6
        mm = per_m["mmseqs2"] * sum(REAL_RESIDUES.values()) / 1e6
        out[cpus] = {"per_query_s_per_million": {"jackhmmer (residues)": round(per_m["jackhmmer"], 5),
                                                 "mmseqs2 (residues)": round(per_m["mmseqs2"], 5),
                                                 "hhblits (clusters)": round(per_m["hhblits"], 3)},
                     "EXTRAPOLATED_per_query_s": {"jackhmmer uniref90+mgnify": round(jack, 1),
                                                  "hhblits bfd+uniref30": round(hh, 1),
                                                  "mmseqs2 uniref90+mgnify": round(mm, 1)},
                     "EXTRAPOLATED_jackhmmer_plus_hhblits_over_mmseqs2": round((jack + hh) / max(mm, 1e-9), 2)}
    return {"EXTRAPOLATED": out, "from_size": large["size"],
            "how": ("per-query seconds in a batch divided by the database's size measured, times the real "
                    "databases' sizes (REAL_RESIDUES, REAL_CLUSTERS); linear through zero, not measured")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="50000,200000", help="database sizes in sequences, comma-separated")
    p.add_argument("--hh-size", type=int, default=100000, help="sequences the HH-suite database is built from")
    p.add_argument("--families", type=int, default=200)
    p.add_argument("--members", type=int, default=300, help="homologs per family")
    p.add_argument("--batch", type=int, default=100, help="queries searched in one call")
    p.add_argument("--cpus-list", default=str(os.cpu_count() or 1),
                   help="core counts to measure at, comma-separated, largest first (the builds use the largest)")
    p.add_argument("--tools", default="jackhmmer,mmseqs2,hhblits",
                   help=f"comma-separated, of {', '.join(TOOLS)} (the GPU ones need --mmseqs-gpu)")
    p.add_argument("--mmseqs-gpu", default=None, help="MMseqs2's GPU build (its release the CPU one's)")
    p.add_argument("--jackhmmer-batch", type=int, default=0,
                   help="queries of jackhmmer's batch when fewer than --batch (its time per query is flat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", choices=["random", "real"], default="real",
                   help="real: the seed file's other proteins, each copy 30 %% mutated; random: UniProt composition")
    p.add_argument("--seeds-fasta", default=str(Path.home() / ".local/share/af2jobs/databases/uniref90/uniref90.fasta"))
    p.add_argument("--work", default=None, help="scratch folder for the databases (default: the system's temp)")
    p.add_argument("--out", required=True, help="msa_bench.json goes here")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
    settings["binaries"] = {name: shutil.which(name) for name in ("mmseqs", "hhblits", "hhblits_omp", "cstranslate")}
    from af2jobs.pipeline import mmseqs

    settings["mmseqs_engine"] = mmseqs.engine().to_dict()
    if args.mmseqs_gpu:
        os.environ["AF2_MMSEQS"] = args.mmseqs_gpu
        settings["mmseqs_gpu_engine"] = mmseqs.engine().to_dict()
        os.environ.pop("AF2_MMSEQS")
    report = Report(out / "msa_bench.json", settings)
    for size in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.work, prefix="msa-bench-") as tmp:
            try:
                measure(args, size, Path(tmp) / "db", report)
            finally:
                report.data.update(extrapolate(report.data["runs"]))
                report.save()
    report.data["peak_mib_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report.save()
    print(json.dumps(report.data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
