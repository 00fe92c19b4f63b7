"""`af2 predict` end to end (tiny model, small real database), its outputs, exit codes and bad input."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys

import pytest

from af2jobs.cli.main import main
from tests.conftest import UBIQUITIN, YEAST_UBIQUITIN

pytestmark = pytest.mark.pipeline

FAST = ["--profile", "tiny", "--max-msa", "16:32", "--models", "model_1,model_3", "--models-to-relax", "none"]


@pytest.fixture
def env(settings_factory, monkeypatch, tmp_path):
    s = settings_factory()
    monkeypatch.setenv("AF2_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("AF2_DB_ROOT", str(s.database_root))
    monkeypatch.setenv("AF2_PARAMS_DIR", str(s.params_root))
    return s


def _ca_bfactors(pdb: str) -> list[float]:
    return [float(line[60:66]) for line in pdb.splitlines() if line.startswith("ATOM") and line[12:16] == " CA "]


def test_predict_writes_alphafold_layout(env, tmp_path):
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq test\n{YEAST_UBIQUITIN[:40]}\n{YEAST_UBIQUITIN[40:]}\n")
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "--out", str(out), "--strategy", "best", *FAST,
                 "--models-to-relax", "best"]) == 0
    d = out / "ubq"
    pdb = (d / "ranked_0.pdb").read_text()
    bfactors = _ca_bfactors(pdb)
    assert len(bfactors) == len(UBIQUITIN)
    ranking = json.loads((d / "ranking_debug.json").read_text())
    best = ranking["order"][0]
    conf = json.loads((d / f"confidence_{best}_full.json").read_text())
    assert bfactors == pytest.approx(conf["plddt"], abs=0.011)  # pLDDT in the B-factor column
    assert "UNTRAINED" in pdb.split("ATOM")[0]
    assert (d / "ranked_0.cif").read_text().startswith("# af2jobs")
    assert "UNTRAINED" in (d / "ranked_0.cif").read_text().split("data_")[0]
    assert set(ranking["screen"]) == {"model_1", "model_3"} and ranking["untrained"] is True
    assert len(conf["predicted_aligned_error"]) == len(UBIQUITIN) and 0 <= conf["ptm"] <= 1
    [afdb] = json.loads((d / f"{best}_predicted_aligned_error_v1.json").read_text())  # AlphaFold DB's layout
    assert afdb["predicted_aligned_error"] == conf["predicted_aligned_error"]
    assert afdb["max_predicted_aligned_error"] == pytest.approx(conf["max_predicted_aligned_error"], abs=0.01)
    timings = json.loads((d / "timings.json").read_text())
    assert {"msa", "features", "predict", "outputs", "total_s"} <= set(timings)
    models = timings["predict"]["models"]
    assert [m["phase"] for m in models] == ["screen", "screen", "full"]
    assert all("compile_s" in m and m["run_s"] > 0 for m in models)
    versions = json.loads((d / "versions.json").read_text())
    assert versions["params_status"] == "UNTRAINED" and "UNTRAINED" in versions["note"]
    assert versions["alphafold"] and versions["packages"]["jax"]
    # db_preset full_dbs (the default): UniRef90 and MGnify by jackhmmer, BFD + UniRef30 by HHblits; not small BFD.
    # Then HHsearch against pdb70: 1UBQ (human ubiquitin), which models 1 and 2 use as yeast ubiquitin's template.
    assert {db["name"] for db in versions["databases"]} == {"uniref90", "mgnify", "bfd", "uniref30", "pdb70"}
    assert versions["templates"]["used"][0]["pdb_id"] == "1ubq"
    assert ranking["templates"]["used"][0]["pdb_id"] == "1ubq" and ranking["templates"]["by_models"] == ["model_1"]
    assert (d / "msas" / "pdb_hits.hhr").is_file() and timings["templates"]["used"][0] == "1ubq_A"
    # The MSA's rows: the sequence searches' (not the template search's hits), then fewer after de-duplication.
    searched = {s["database"]: s["hits"] for s in timings["msa"]["searches"]}
    depth = timings["msa_depth"]
    assert depth["given"] == 1 + sum(n for db, n in searched.items() if db != "pdb70") >= depth["unique"]
    assert depth["unique"] == timings["features"]["msa_rows"] and depth["used"]["caps"][0] in (12, 16)
    assert (versions["db_preset"], versions["model_preset"], versions["msa_supplied"]) == (
        "full_dbs", "monomer_ptm", False)
    assert (d / "msas" / "bfd_uniref_hits.a3m").is_file() and not (d / "msas" / "small_bfd_hits.sto").exists()
    assert versions["msa_depth_caps"] == {"max_msa_clusters": 16, "max_extra_msa": 32}
    # Amber relaxation of the best model (AlphaFold's default): ranked_0 is the relaxed structure, with hydrogens
    # and the pLDDT kept; the unrelaxed one stays beside it.
    relax = ranking["relax"][best]
    assert relax["error"] is None and relax["platform"] == "CPU" and relax["seconds"] > 0
    # (The untrained structure is no protein-like chain: what relaxation does to it is tested on real
    # structures in tests/pipeline/test_relax.py; here, that it ran and what it wrote.)
    assert relax["violations_before"] > 0 and relax["energy_before"] is not None and relax["rmsd"] is not None
    assert "Amber-relaxed" in pdb.split("ATOM")[0] and any(line[76:78].strip() == "H" for line in pdb.splitlines())
    assert (d / f"relaxed_{best}.pdb").read_text() == pdb
    assert "unrelaxed (not Amber-relaxed)" in (d / f"unrelaxed_{best}.pdb").read_text()
    assert set(_ca_bfactors((d / f"unrelaxed_{best}.pdb").read_text())) == set(bfactors)
    assert json.loads((d / "timings.json").read_text())["relax"]["models"][best]["seconds"] == relax["seconds"]
    sto = (d / "msas" / "uniref90_hits.sto").read_text()
    assert sum(1 for line in sto.splitlines() if line and not line.startswith(("#", "//"))) > 10
    assert (d / "features.pkl").stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    # README's tree: the record's input, the screening runs' confidences, no stage markers.
    assert (d / "input.fasta").read_text() == f">ubq test\n{YEAST_UBIQUITIN}\n"
    assert len(list(d.glob("confidence_*_screen.json"))) == 2 and not list(d.glob(".af2-*"))
    # report.html beside the results: the viewer inlined (no network), the UNTRAINED banner, the plots.
    page = (d / "report.html").read_text()
    assert 'id="untrained"' in page and 'id="viewer"' in page and "$3Dmol" in page and "<script src" not in page
    assert all((d / png).stat().st_size > 1000 for png in ("plddt.png", "pae.png", "msa_depth.png"))

    # The same sequence again: the MSA comes from the cache and costs no search.
    assert main(["predict", str(fasta), "--out", str(tmp_path / "again"), "--strategy", "all", *FAST]) == 0
    again = json.loads((tmp_path / "again" / "ubq" / "timings.json").read_text())
    assert again["msa"]["cache"] == "hit" and again["msa"]["search_s"] == 0.0
    assert [m["phase"] for m in again["predict"]["models"]] == ["full", "full"]


def test_a_relaxation_that_fails_leaves_the_unrelaxed_structure_and_says_why(env, tmp_path, monkeypatch):
    from alphafold.relax import relax

    def cannot(self, *, prot):
        raise ValueError("Minimization failed after 100 attempts.")

    monkeypatch.setattr(relax.AmberRelaxation, "process", cannot)
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{UBIQUITIN[:40]}\n")
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "--out", str(out), *FAST, "--models-to-relax", "all"]) == 0
    d = out / "ubq"
    ranking = json.loads((d / "ranking_debug.json").read_text())
    assert set(ranking["relax"]) == {"model_1", "model_3"}
    for model, attempt in ranking["relax"].items():
        assert attempt["error"] == "ValueError: Minimization failed after 100 attempts."
        assert attempt["violations_after"] is None and not (d / f"relaxed_{model}.pdb").exists()
    pdb = (d / "ranked_0.pdb").read_text()
    remarks = " ".join(line[11:].strip() for line in pdb.splitlines() if line.startswith("REMARK"))
    assert "unrelaxed: the Amber relaxation failed (ValueError: Minimization failed after 100 attempts.)" in remarks
    assert pdb == (d / f"unrelaxed_{ranking['order'][0]}.pdb").read_text()


def test_reduced_dbs_searches_small_bfd_and_the_original_models_give_no_ptm(env, tmp_path):
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{UBIQUITIN[:50]}\n")
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "--out", str(out), "--db-preset", "reduced_dbs", "--model-preset", "monomer",
                 *FAST]) == 0
    versions = json.loads((out / "ubq" / "versions.json").read_text())
    assert {db["name"] for db in versions["databases"]} == {"uniref90", "mgnify", "small_bfd", "pdb70"}
    assert set(versions["params"]) == {"model_1", "model_3"}  # params_model_N, not params_model_N_ptm
    best = json.loads((out / "ubq" / "ranking_debug.json").read_text())["order"][0]
    assert "ptm" not in json.loads((out / "ubq" / f"confidence_{best}_full.json").read_text())


def test_msa_mode_mmseqs2_searches_all_records_in_one_run_and_finds_templates_with_its_msa(env, tmp_path,
                                                                                           monkeypatch):
    from af2jobs.pipeline import mmseqs

    calls = []
    real = mmseqs.search
    monkeypatch.setattr(mmseqs, "search",
                        lambda queries, *a, **k: calls.append(sorted(queries)) or real(queries, *a, **k))
    fasta = tmp_path / "two.fasta"
    fasta.write_text(f">ubq\n{YEAST_UBIQUITIN}\n>half\n{UBIQUITIN[:40]}\n")
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "--out", str(out), "--msa-mode", "mmseqs2", "--models", "model_1",
                 "--profile", "tiny", "--max-msa", "16:32", "--models-to-relax", "none"]) == 0
    assert len(calls) == 1 and len(calls[0]) == 2  # one run for both, then each record's MSA is a cache hit
    for name, query in (("ubq", YEAST_UBIQUITIN), ("half", UBIQUITIN[:40])):
        assert (out / name / "msas" / "uniref.a3m").read_text().startswith(f">query\n{query}\n")
        assert json.loads((out / name / "timings.json").read_text())["msa"]["cache"] == "hit"
    record = out / "ubq"
    versions = json.loads((record / "versions.json").read_text())
    assert {db["name"] for db in versions["databases"]} == {"mmseqs_uniref", "mmseqs_env", "pdb70"}
    assert versions["msa_engine"].startswith("MMseqs2 18-8cc5c (") and "on the CPU" in versions["msa_engine"]
    assert "Searched with MMseqs2 18-8cc5c" in (record / "report.html").read_text()
    assert (record / "msas" / "uniref.a3m").read_text().count(">") > 10  # the demo's ubiquitins
    assert not (record / "msas" / "uniref90_hits.sto").exists()  # jackhmmer did not run
    timings = json.loads((record / "timings.json").read_text())
    assert "1ubq_A" in timings["templates"]["used"]  # HHsearch of the MMseqs2 MSA found the template
    rows = pickle.loads((record / "features.pkl").read_bytes())["msa"].shape[0]
    assert rows > 5  # the demo's ubiquitins, de-duplicated


def test_msa_mode_mmseqs2_without_its_database_fails_naming_it(env, tmp_path, capsys):
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{UBIQUITIN}\n")
    empty = tmp_path / "db"
    shutil.copytree(env.database_root / "uniref90", empty / "uniref90")
    assert main(["predict", str(fasta), "--out", str(tmp_path / "o"), "--msa-mode", "mmseqs2",
                 "--db-root", str(empty), *FAST]) != 0
    err = capsys.readouterr().err
    assert "msa_mode mmseqs2 searches mmseqs_uniref, mmseqs_env, pdb70, pdb_mmcif" in err
    assert "mmseqs_uniref, mmseqs_env, pdb70, pdb_mmcif are not installed" in err and not (tmp_path / "o").exists()


def test_a_database_the_preset_names_is_not_left_out_without_a_word(env, tmp_path, capsys):
    """No UniRef90 and no MGnify under the root: full_dbs is refused naming them, before any search or file."""
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{UBIQUITIN}\n")
    root = tmp_path / "db"
    for name in ("bfd", "uniref30", "pdb70", "pdb_mmcif"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(env.database_root / name, target_is_directory=True)
    assert main(["predict", str(fasta), "--out", str(tmp_path / "o"), "--db-root", str(root), *FAST]) == 1
    err = capsys.readouterr().err
    assert "db_preset full_dbs searches uniref90, mgnify, bfd, uniref30" in err
    assert "uniref90, mgnify are not installed" in err and not (tmp_path / "o").exists()


def test_an_msa_of_your_own_is_used_and_no_database_is_searched(env, tmp_path, capsys):
    seq = UBIQUITIN[:40]
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{seq}\n")
    own = tmp_path / "own.a3m"
    rows = (f">101\n{seq}\n>relative\n{seq[:10]}-{seq[11:]}\n>other\nmk{seq[:20]}A{seq[21:]}\n"
            f">again\n{seq[:10]}-{seq[11:]}\n")  # the same aligned row twice: AlphaFold keeps one
    own.write_text(f"#{len(seq)}\t1\n{rows}")  # as ColabFold writes it: its '#<lengths>\t<cardinalities>' line
    out, empty = tmp_path / "out", tmp_path / "no-databases"
    empty.mkdir()
    assert main(["predict", str(fasta), "--out", str(out), "--msa", str(own), "--db-root", str(empty), *FAST]) == 0
    d = out / "ubq"
    timings = json.loads((d / "timings.json").read_text())
    assert timings["msa"]["cache"] == "supplied" and timings["features"]["msa_rows"] == 3
    # The depth, once, the same everywhere: 4 rows given, 3 after de-duplication, all 3 read as cluster centres.
    depth = timings["msa_depth"]
    assert (depth["given"], depth["unique"], depth["used"]["clusters"], depth["used"]["extra"]) == (4, 3, 3, 0)
    assert json.loads((out / "predictions.json").read_text())["records"][0]["msa_depth"] == depth
    assert "4 given, 3 unique, 3 + 0 read by the model" in (d / "report.html").read_text()
    versions = json.loads((d / "versions.json").read_text())
    assert versions["msa_depth"] == depth
    assert versions["msa_supplied"] is True and versions["databases"] == []
    assert (d / "msas" / "supplied_msa.a3m").read_text() == rows  # no comment line: AlphaFold's parser reads none

    bad = tmp_path / "bad.a3m"
    bad.write_text(f">ubq\n{seq}\n>short\n{seq[:-3]}\n")
    assert main(["predict", str(fasta), "--out", str(tmp_path / "o"), "--msa", str(bad), *FAST]) == 2
    assert "msa for record 'ubq', line 3: row short has 37 match columns" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_several_records_are_separate_monomer_predictions(env, tmp_path):
    fasta = tmp_path / "two.fasta"
    fasta.write_text(f">first\n{UBIQUITIN}\n>second\n{UBIQUITIN[::-1]}\n")
    out = tmp_path / "out"
    # No relax: relaxing the untrained structure of a reversed sequence on a CPU costs minutes and shows nothing
    # here (relax has its own tests).
    assert main(["predict", str(fasta), "--out", str(out), "--models", "model_3", "--profile", "tiny",
                 "--max-msa", "16:32", "--models-to-relax", "none"]) == 0
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["mode"] == "monomer" and [r["name"] for r in summary["records"]] == ["first", "second"]
    assert (out / "first" / "ranked_0.pdb").is_file() and (out / "second" / "ranked_0.pdb").is_file()


def test_failure_mid_pipeline_leaves_no_partial_output(env, tmp_path, monkeypatch):
    from af2jobs.pipeline import predict

    def boom(self, raw):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(predict.Predictor, "predict", boom)
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{UBIQUITIN}\n")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        main(["predict", str(fasta), "--out", str(out), *FAST])
    assert list(out.iterdir()) == []


BAD_FASTA = {
    "empty": b"",
    "whitespace only": b"  \n\n",
    "sequence before header": b"MQIFV\n>a\nMQIFVKTLTGKTITLEVEPSDT\n",
    "header without name": b">\nMQIFVKTLTGKTITLEVEPSDT\n",
    "empty record": b">a\n>b\nMQIFVKTLTGKTITLEVEPSDT\n",
    "digit": b">a\nMQIFVKTLTG1KTITLEVEPSDT\n",
    "ambiguous B": b">a\nMQIFVKTLTGBKTITLEVEPSDT\n",
    "alignment gap": b">a\nMQIFVKTLTG-KTITLEVEPSDT\n",
    "star inside": b">a\nMQIFVKT*LTGKTITLEVEPSDT\n",
    "too short": b">a\nMQIFVKTLT\n",
    "too long": b">a\n" + b"A" * 2501 + b"\n",
    "duplicate names": b">a\nMQIFVKTLTGKTITLEVEPSDT\n>a\nMQIFVKTLTGKTITLEVEPSDT\n",
    "not utf-8": b">a\nMQIFV\xff\xfeKTLTGKTITLEVEPSDT\n",
    "NUL byte": b">a\nMQIFV\x00KTLTGKTITLEVEPSDT\n",
    "gzip": b"\x1f\x8b\x08\x00" + b"\x00" * 20,
    "json": b'{"sequence": "MQIFVKTLTGKTITLEVEPSDT"}',
    "html": b"<html><body>MQIFV</body></html>",
    "fastq": b"@read1\nMQIFVKTLTGKTITLEVEPSDT\n+\nIIIIIIIIIIIIIIIIIIIIII\n",
    "stockholm": b"# STOCKHOLM 1.0\nq MQIFV\n//\n",
    "greek letter": ">a\nMQIFVKTLTGΑKTITLEVEPSDT\n".encode(),
    "emoji": ">a\nMQIFVKTLTG\U0001F600KTITLEVEPSDT\n".encode(),
    "semicolon inside": b">a\nMQIFVKTLTG;KTITLEVEPSDT\n",
    "clashing file names": b">a/b\nMQIFVKTLTGKTITLEVEPSDT\n>a_b\nMQIFVKTLTGKTITLEVEPSDT\n",
}


@pytest.mark.parametrize("case", sorted(BAD_FASTA))
def test_bad_fasta_exits_2_with_a_message_and_writes_nothing(case, env, tmp_path, capsys):
    fasta = tmp_path / "bad.fasta"
    fasta.write_bytes(BAD_FASTA[case])
    out = tmp_path / "out"
    assert main(["predict", str(fasta), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("af2: error: FASTA") and len(err.strip()) > 30
    assert not out.exists()


def test_console_script_exit_codes(tmp_path):
    """The installed `af2` program: 2 for bad input and bad options, with the reason on stderr."""
    af2 = [sys.executable, "-m", "af2jobs.cli.main"]
    bad = tmp_path / "bad.fasta"
    bad.write_text(">a\nMQIFVKTLTG1KTITLEVEPSDT\n")
    r = subprocess.run([*af2, "predict", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "'1' is not an amino-acid letter" in r.stderr
    r = subprocess.run([*af2, "predict", str(tmp_path / "missing.fasta"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
    good = tmp_path / "good.fasta"
    good.write_text(f">a\n{UBIQUITIN}\n")
    r = subprocess.run([*af2, "predict", str(good), "--out", str(tmp_path / "o"), "--strategy", "worst"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "strategy" in r.stderr
    assert not (tmp_path / "o").exists()


# The same choices through `af2 predict` and through POST /jobs: the same answer (the CLI names its flag first).
SAME_ANSWER = {
    "seeds of a monomer": (["--num-multimer-predictions-per-model", "3"], {"num_multimer_predictions_per_model": 3}),
    "unknown model": (["--models", "model_1,model_9"], {"model_names": "model_1,model_9"}),
    "strategy": (["--strategy", "stop-at-score:200"], {"strategy": "stop-at-score:200"}),
    "future template date": (["--max-template-date", "2999-01-01"], {"max_template_date": "2999-01-01"}),
    "too many GPUs": (["--gpus", "9"], {"gpu": 9}),
}


@pytest.mark.parametrize("case", sorted(SAME_ANSWER))
def test_the_command_line_and_the_api_give_the_same_answer(case, env, tmp_path, capsys):
    from tests.functional.api_support import asgi_client, close_world, local_keys, local_world

    flags, fields = SAME_ANSWER[case]
    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">a\n{UBIQUITIN}\n>b\n{UBIQUITIN[:50]}\n")
    assert main(["predict", str(fasta), "--out", str(tmp_path / "o"), *flags]) == 2
    cli = capsys.readouterr().err.removeprefix("af2: error: ").strip()

    world = local_world(tmp_path / "api", local_keys(tmp_path / "keys"))
    reply = asgi_client(world).call("POST", "/jobs", json_body={"fasta": "in", "sequence": fasta.read_text(),
                                                                **fields}, headers={"Authorization": world.ann})
    close_world(world)
    assert reply.status == 422, reply.text
    api = reply.json()["message"]
    assert cli.endswith(api) and cli.split(":")[0].startswith("--"), (cli, api)
    assert "Value error" not in cli and not (tmp_path / "o").exists()


def test_gpus_beyond_what_this_machine_has_are_refused(env, tmp_path, capsys):
    import jax

    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">a\n{UBIQUITIN}\n")
    n = len(jax.devices())
    assert main(["predict", str(fasta), "--out", str(tmp_path / "o"), "--gpus", str(n + 1)]) == 2
    err = capsys.readouterr().err
    assert f"--gpus {n + 1}: JAX sees {n} device(s) on this machine" in err and not (tmp_path / "o").exists()


def test_an_interrupted_predict_leaves_nothing_half_written_and_a_second_one_waits_its_turn(env, tmp_path):
    """SIGTERM in the middle of a record: the run ends 130 and its staging folder goes; a leftover of a run killed
    outright (SIGKILL) is removed by the next run into the same folder; two runs into one folder: the second is
    refused."""
    import signal
    import time

    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(f">ubq\n{UBIQUITIN}\n")
    out = tmp_path / "out"
    (out / ".tmp-ubq-killed").mkdir(parents=True)  # what a SIGKILLed run leaves
    (out / ".tmp-ubq-killed" / "features.pkl").write_bytes(b"half")
    af2 = [sys.executable, "-m", "af2jobs.cli.main", "predict", str(fasta), "--out", str(out), *FAST]
    proc = subprocess.Popen(af2, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".tmp-ubq-") and p.name != ".tmp-ubq-killed" for p in out.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        assert not (out / ".tmp-ubq-killed").exists()  # the earlier run's leftover went first
        second = subprocess.run(af2, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "another af2 predict is writing to" in second.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
    finally:
        proc.kill()
    assert "af2: interrupted" in proc.stderr.read()
    assert not any(p.name.startswith(".tmp-") for p in out.iterdir()) and not (out / "ubq").exists()
