"""The local worker running real jobs (tiny model, small real database) through the service: success, failure,
cancel, pause and recovery after a crash."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from af2jobs import errors, layout, wiring
from af2jobs.adapters.local.gpuslots import parse_gpus
from af2jobs.adapters.local.worker import Worker
from af2jobs.api.routes import log_tail
from af2jobs.jobrun import CASP14_NOTE, run_config_for
from af2jobs.lifecycle import INTERRUPTED
from af2jobs.models import Job, JobState, Principal
from af2jobs.request import JobRequest
from af2jobs.notification import UNTRAINED_LINE
from tests.conftest import DATA, UBIQUITIN, YEAST_UBIQUITIN

pytestmark = pytest.mark.pipeline

S = JobState
ANN = Principal("ann")
# The tiny model with small MSA caps and the default 3 recycles, as in the other pipeline tests: every job here
# has the same configuration and shapes, so the model compiles once per session (and models 1-5 share it).
TINY = {"profile": "tiny", "max_msa_clusters": 16, "max_extra_msa": 32, "models_to_relax": "none"}
# All five models in full: ~20 recycles of ~0.3 s, a prediction that runs long enough to be interrupted.
SLOW = {**TINY, "model_names": ["model_1", "model_2", "model_3", "model_4", "model_5"], "strategy": "all"}


@pytest.fixture
def build(settings_factory):
    """Services on one private data dir; started unless start=False; all closed (workers stopped) at the end."""
    made: list[wiring.Services] = []

    def make(overrides: dict = TINY, start: bool = True, **settings) -> wiring.Services:
        services = wiring.build(settings_factory(**settings), run_overrides=overrides)
        made.append(services)
        if start:
            services.worker.start()
        return services

    yield make
    for services in reversed(made):
        services.close()


def submit(services: wiring.Services, fasta: str | None = None, **fields) -> Job:
    body = {"fasta": "ubq", "sequence": fasta or UBIQUITIN, "model_names": ["model_1"], "strategy": "best", **fields}
    return services.service.submit(ANN, JobRequest.parse(body))


def wait_for(services: wiring.Services, job_id: str, done: Callable[[Job], bool], timeout: float = 120) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = services.repo.get(job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job.state.value} ({job.progress}) after {timeout} s")
        time.sleep(0.05)


def finished(job: Job) -> bool:
    return job.finished


def predicting(job: Job) -> bool:
    # Past the compile and into the recycles: the stage now checks for a cancel between iterations.
    return job.progress is not None and "recycle" in job.progress.message


def outbox(services: wiring.Services, job_id: str) -> dict[str, dict]:
    files = sorted(services.settings.outbox_dir.glob(f"*-{job_id}-*.json"))
    return {json.loads(f.read_text())["event"]: json.loads(f.read_text()) for f in files}


def settled(services: wiring.Services, job_id: str, timeout: float = 120) -> Job:
    """The finished job, once the worker is done with it: its notification is the last thing it writes."""
    job = wait_for(services, job_id, finished, timeout)
    deadline = time.monotonic() + 5
    while job.state.value.lower() not in outbox(services, job_id):
        assert time.monotonic() < deadline, f"no {job.state.value} notification for {job_id}"
        time.sleep(0.05)
    return job


def test_a_job_runs_every_record_to_succeeded_and_publishes_its_files(build):
    services = build()
    two = f">ubq_a first\n{UBIQUITIN}\n>ubq_b second\n{UBIQUITIN}\n"
    job = settled(services, submit(services, two).id)

    assert job.state is S.SUCCEEDED, job.error
    assert set(job.phases) == {"QUEUED", "VALIDATING", "MSA", "PREDICTING", "SUCCEEDED"}
    assert set(job.cost) == {"validating_s", "msa_s", "predict_s", "publish_s", "usd"} and job.cost["predict_s"] > 0
    usd = job.cost["usd"]  # priced on the AWS instances of the job's queue, from the measured seconds
    assert usd["gpu_s"] == pytest.approx(job.cost["predict_s"] + job.cost["publish_s"], abs=0.01)
    assert usd["total_usd"] == pytest.approx(usd["cpu_usd"] + usd["gpu_usd"], abs=1e-5) and usd["gpu_usd"] > 0
    store = services.store
    for slug in ("ubq_a", "ubq_b"):
        assert job.artifacts[f"{slug}/ranked_0.pdb"] == f"jobs/{job.id}/output/{slug}/ranked_0.pdb"
        pdb = store.get_bytes(job.artifacts[f"{slug}/ranked_0.pdb"]).decode()
        assert pdb.startswith("REMARK") and sum(line.startswith("ATOM") for line in pdb.splitlines()) > 500
        for name in ("ranked_0.cif", "ranking_debug.json", "timings.json", "features.pkl",
                     "confidence_model_1_full.json", "msas/uniref90_hits.sto", "report.html", "plddt.png"):
            assert store.get_bytes(job.artifacts[f"{slug}/{name}"])
        # Its report prices the record's measured stages on the queue's instances (no estimate needed).
        page = store.get_bytes(job.artifacts[f"{slug}/report.html"]).decode()
        assert "CPU phase (MSA, features)" in page and "on 1 GPU(s) of g5.2xlarge" in page and "ESTIMATE" not in page
        versions = json.loads(store.get_bytes(job.artifacts[f"{slug}/versions.json"]))
        assert versions["preset"] == "full" and versions["params_status"] == "UNTRAINED"
        assert versions["run_config"]["profile"] == "tiny" and versions["msa_depth_caps"]["max_msa_clusters"] == 16
    summary = json.loads(store.get_bytes(job.artifacts["predictions.json"]))
    assert [r["name"] for r in summary["records"]] == ["ubq_a", "ubq_b"]
    assert all(r["best_model"] == "model_1" and r["untrained"] for r in summary["records"])
    assert job.progress.stage == "done" and "model_1" in job.progress.message
    # The working copies are gone once published; the log stays with the job.
    assert not (services.settings.artifacts_dir / "jobs" / job.id / "work").exists()
    log_lines = log_tail(services.store, job.id)
    assert 0 < len(log_lines) <= 50 and "SUCCEEDED" in log_lines[-1]
    assert len(log_tail(services.store, job.id, lines=3)) == 3
    assert store.get_bytes(job.artifacts["log.txt"]).decode().endswith(log_lines[-1] + "\n")
    messages = outbox(services, job.id)
    assert set(messages) == {"submitted", "succeeded"}
    done = messages["succeeded"]
    assert done["untrained_note"] == UNTRAINED_LINE and done["download"] == f"af2 download {job.id} DIR"
    assert [r["best_model"] for r in done["records"]] == ["model_1", "model_1"]


# The original platform's two multimer examples, with stand-ins the tiny model runs in the suite's time: for 3JA9
# (a homotrimer) three copies of yeast ubiquitin's first 40 residues, which find 1UBQ by hmmsearch of pdb_seqres; for 7ALC
# (two proteins) the ribosomal proteins L29 and L35 of two bacteria, whose UniProt hits share species that pair rows.
L29 = "MNAAELRKLSAEQLKDKLAESRKELFDMRFRHATAQLEKTSNLPATKRDIARILTILKEKG"
L35 = "MPKMKTKSALKKRVKVTATGKIKREQAFRSHLAQNKTKKQKRQSRKASFMKRSDFKRFKFML"
COMPLEXES = {"3JA9": [YEAST_UBIQUITIN[:40]] * 3, "7ALC": [L29, L35]}


def test_the_original_platforms_request_files_run_as_written_to_succeeded(build):
    """Both versions' request bodies (2021 command.json, 2022 sampleParameters.json) as the platform's users wrote
    them, all their items, their FASTA files uploaded to the owner's folder. Ubiquitin stands in for each monomer
    file's protein (yeast's, whose template 1UBQ is) and COMPLEXES for the multimer files', so that the tiny model
    on the demo database runs them all
    in the suite's time; the fields are the files' own."""
    services = build(overrides={**TINY, "num_recycle": 0})
    requests = {name: json.loads((DATA / "requests" / name).read_text())
                for name in ("command_2021.json", "sample_parameters_2022.json")}
    for items in requests.values():
        for item in items:
            chains = COMPLEXES.get(item["fasta"], [YEAST_UBIQUITIN])
            fasta = "".join(f">{item['fasta']}_{i}\n{seq}\n" for i, seq in enumerate(chains))
            services.store.put_bytes(layout.upload_prefix(ANN.owner) + item["file_name"], fasta.encode())
    jobs = []
    for items in requests.values():
        jobs += services.service.submit_many(ANN, [JobRequest.parse(i) for i in items])

    expected = {  # fasta -> (db_preset, model_preset, predictions ranked, max_template_date)
        "7BW6": [("full_dbs", "monomer_ptm", 5, "2020-05-14"), ("reduced_dbs", "monomer", 5, "2021-11-01")],
        "1A9X": [("reduced_dbs", "monomer_ptm", 1, "2020-05-14")],
        "7K59": [("full_dbs", "monomer_ptm", 5, "2020-05-14")],
        "6TBT": [("reduced_dbs", "monomer_casp14", 5, "2020-05-14")],
        "3JA9": [("full_dbs", "multimer", 25, "2021-11-01")],  # 5 models x 5 seeds
        "7ALC": [("full_dbs", "multimer", 5, "2021-11-01")],  # 5 models x 1 seed
    }
    seen: dict[str, list] = {}
    for job in jobs:
        job = settled(services, job.id, timeout=600)
        assert job.state is S.SUCCEEDED, (job.request.fasta, job.error)
        summary = json.loads(services.store.get_bytes(job.artifacts["predictions.json"]))
        slug = summary["records"][0]["dir"]
        versions = json.loads(services.store.get_bytes(job.artifacts[f"{slug}/versions.json"]))
        ranking = json.loads(services.store.get_bytes(job.artifacts[f"{slug}/ranking_debug.json"]))
        seen.setdefault(job.request.fasta, []).append((
            versions["db_preset"], versions["model_preset"], len(ranking["order"]),
            ranking["templates"]["max_template_date"]))
        if job.request.fasta in COMPLEXES:
            (record,) = summary["records"]
            assert summary["mode"] == "multimer" and record["iptm"] is not None
            assert [c["chain"] for c in record["chains"]] == ["A", "B", "C"][: len(COMPLEXES[job.request.fasta])]
            assert set(ranking["iptm+ptm"]) == set(ranking["order"]) and len(ranking["iptm"]) == len(ranking["order"])
            pdb = services.store.get_bytes(job.artifacts[f"{slug}/ranked_0.pdb"]).decode()
            chains = {line[21] for line in pdb.splitlines() if line.startswith("ATOM")}
            assert chains == set("ABC"[: len(COMPLEXES[job.request.fasta])])
        if job.request.fasta != "7ALC":
            # 1UBQ (human ubiquitin, released 1987) is yeast ubiquitin's template under either date.
            assert ranking["templates"]["used"][0]["pdb_id"] == "1ubq"
    assert seen == expected


def test_without_official_parameters_a_job_fails_at_once_where_untrained_runs_are_not_allowed(build, tmp_path):
    # The published architecture (no tiny profile), and no parameters loaded: the job fails before any search.
    services = build(overrides={"models_to_relax": "none"}, allow_untrained=False)
    started = time.monotonic()
    job = settled(services, submit(services).id)

    assert job.state is S.FAILED and job.error.stage == "validating" and time.monotonic() - started < 30
    assert "the official AlphaFold parameters are not loaded" in job.error.message
    assert "params_model_1_ptm.npz" in job.error.message and "AllowUntrained=true" in job.error.message
    assert "MSA" not in set(job.phases)  # no MSA ran


def test_serve_warns_at_start_up_of_what_its_jobs_will_lack(settings_factory, tmp_path):
    from af2jobs.cli.serve import setup_warnings

    bare = settings_factory(db_root=tmp_path / "none", allow_untrained=False)
    lines = setup_warnings(bare)
    assert any("no database under" in line and "af2 db fetch-demo" in line for line in lines)
    assert any("UNTRAINED" in line and "AF2_ALLOW_UNTRAINED=false refuses" in line for line in lines)
    assert not any("no database" in line for line in setup_warnings(settings_factory()))


def test_a_failing_stage_fails_the_job_with_its_stage_and_message(build, tmp_path):
    services = build(db_root=tmp_path / "no-databases")
    job = settled(services, submit(services).id)

    assert job.state is S.FAILED
    assert job.error.stage == "msa" and job.error.type == "StageError"
    assert "no sequence database is configured" in job.error.message
    failed = outbox(services, job.id)["failed"]
    assert failed["error"] == job.error.model_dump() and failed["state"] == "FAILED"
    assert "FAILED in msa" in log_tail(services.store, job.id)[-1]


def test_cancelling_a_running_prediction_ends_cancelled_within_seconds(build):
    services = build(overrides=SLOW)
    job = wait_for(services, submit(services).id, predicting)

    started = time.monotonic()
    assert services.service.cancel(ANN, job.id).state is S.CANCELLING
    job = settled(services, job.id, timeout=10)
    assert job.state is S.CANCELLED and time.monotonic() - started < 10
    assert {"cancel_requested", "cancelled"} <= set(outbox(services, job.id))
    assert log_tail(services.store, job.id)[-1].endswith("CANCELLED")


def test_no_cpu_workers_pauses_new_jobs_in_the_queue(build):
    services = build(cpu_workers=0)
    job = submit(services)
    time.sleep(1.5)  # a running worker moves a job to VALIDATING within milliseconds

    assert services.repo.get(job.id).state is S.QUEUED
    assert services.service.cancel(ANN, job.id).state is S.CANCELLED


def _to(services: wiring.Services, job: Job, *states: JobState) -> None:
    current = job.state
    for state in states:
        services.repo.transition(job.id, {current}, state)
        current = state


def test_recover_after_a_crash_resumes_or_fails_every_unfinished_job(build):
    # A server that is stopped in the middle of a prediction (its jobs keep their states, as after a crash)...
    first = build(overrides=SLOW)
    interrupted = wait_for(first, submit(first, fasta=f">p\n{UBIQUITIN}\n").id, predicting)
    # ... and jobs left behind in every other unfinished state, written straight into the same database.
    offline = build(start=False)
    queued = submit(offline, fasta=f">q\n{UBIQUITIN}\n")
    mid_msa, no_features, cancelling = (submit(offline, fasta=f">{n}\n{UBIQUITIN}\n") for n in ("m", "x", "c"))
    _to(offline, mid_msa, S.VALIDATING, S.MSA)
    partial = offline.settings.artifacts_dir / "jobs" / mid_msa.id / "work" / "m"
    partial.mkdir(parents=True)
    (partial / "timings.json").write_text("{")  # a file cut short by the crash
    _to(offline, no_features, S.VALIDATING, S.MSA, S.PREDICTING)
    _to(offline, cancelling, S.VALIDATING, S.CANCELLING)
    first.worker.stop()
    assert first.repo.get(interrupted.id).state is S.PREDICTING

    second = build()
    actions = second.worker.recover()

    assert actions[interrupted.id] == "prediction again" and actions[mid_msa.id] == "MSA again"
    assert actions[queued.id] == "queued" and actions[cancelling.id] == "cancelled"
    assert actions[no_features.id].startswith("failed")
    for job in (interrupted, mid_msa, queued):
        assert settled(second, job.id).state is S.SUCCEEDED
    assert any(INTERRUPTED in line for line in log_tail(second.store, interrupted.id))
    failed = second.repo.get(no_features.id)
    assert failed.state is S.FAILED and failed.error.stage == "predicting"
    assert INTERRUPTED in failed.error.message and "(features.pkl) of x are missing" in failed.error.message
    assert second.repo.get(cancelling.id).state is S.CANCELLED


def test_one_worker_per_data_directory(build):
    services = build()
    other = Worker(services.repo, services.store, services.notifier, services.settings)
    with pytest.raises(errors.ConflictError, match="another af2 worker"):
        other.start()


def test_presets_are_alphafolds_in_the_run_configuration(settings_factory):
    settings = settings_factory()

    def config(**fields):
        request = JobRequest.parse({"fasta": "ubq", "sequence": UBIQUITIN, "model_names": ["model_2"], **fields})
        return run_config_for(request, settings, TINY, gpu=False)

    full, notes = config()
    assert (full.max_msa_clusters, full.max_extra_msa, full.model_names, notes) == (16, 32, ("model_2",), [])
    assert (full.db_preset, full.use_ptm, full.num_ensemble) == ("full_dbs", True, 1)
    reduced, notes = config(preset="reduced")  # small BFD instead of BFD + UniRef30; the MSA depth is kept
    assert (reduced.db_preset, reduced.max_msa_clusters, reduced.max_extra_msa, notes) == ("reduced_dbs", 16, 32, [])
    casp14, notes = config(preset="casp14")  # the original models, 8 ensembles
    assert (casp14.model_preset, casp14.use_ptm, casp14.num_ensemble) == ("monomer_casp14", False, 8)
    assert notes == [CASP14_NOTE] and "8 ensembles" in CASP14_NOTE
    monomer, _ = config(model_preset="monomer", db_preset="reduced_dbs")
    assert (monomer.use_ptm, monomer.num_ensemble, monomer.db_preset) == (False, 1, "reduced_dbs")


def test_gpu_slots_come_from_the_gpu_list():
    assert parse_gpus("") == [None]
    assert parse_gpus("0, 1") == ["0", "1"]
    for bad in ("a", "0,0", "-1"):
        with pytest.raises(errors.ConfigurationError, match="AF2_GPUS"):
            parse_gpus(bad)
