"""JobRequest validation (one clear message per field) and the job state graph."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from datetime import date, datetime, timedelta, timezone

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from af2jobs import errors
from af2jobs.runconfig import parse_strategy
from af2jobs.models import TERMINAL, TRANSITIONS, UNFINISHED, Job, JobState, advance, can_move, is_terminal
from af2jobs.request import AUTO_QUEUE_LIMITS, MODEL_NAMES, JobRequest

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
S = JobState

# The graph as the design states it, written out independently of models.TRANSITIONS.
ALLOWED = {
    (S.QUEUED, S.VALIDATING),
    (S.QUEUED, S.CANCELLING),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.FAILED),
    (S.VALIDATING, S.MSA),
    (S.VALIDATING, S.FAILED),
    (S.VALIDATING, S.CANCELLING),
    (S.MSA, S.PREDICTING),
    (S.MSA, S.FAILED),
    (S.MSA, S.CANCELLING),
    (S.PREDICTING, S.SUCCEEDED),
    (S.PREDICTING, S.FAILED),
    (S.PREDICTING, S.CANCELLING),
    (S.CANCELLING, S.CANCELLED),
    (S.CANCELLING, S.FAILED),
}
FORBIDDEN = sorted(set(itertools.product(S, S)) - ALLOWED)


def request(**overrides: object) -> dict[str, object]:
    return {"fasta": "job1", "sequence": SEQ, **overrides}


def parse_error(**overrides: object) -> errors.ValidationError:
    with pytest.raises(errors.ValidationError) as info:
        JobRequest.parse(request(**overrides))
    return info.value


# --------------------------------------------------------------------------------------------------------------
# JobRequest


def test_defaults_follow_the_seed() -> None:
    r = JobRequest.parse(request())
    assert r.model_names == list(MODEL_NAMES)
    assert (r.preset, r.que, r.comment, r.gpu, r.strategy) == ("full", "auto", "", 1, "all")
    assert r.max_template_date == date(2020, 5, 14)
    assert r.file_name is None and r.upload_key("ann") is None


def test_a_full_request_is_kept_as_given() -> None:
    r = JobRequest.parse(
        {
            "fasta": "T1050.v2",
            "file_name": "lab/T1050.fasta",
            "model_names": ["model_3", "model_1"],
            "preset": "CASP14",
            "max_template_date": "2021-01-31",
            "que": "high",
            "comment": "a note",
            "gpu": 2,
            "strategy": "stop-at-score:85.50",
        }
    )
    assert r.model_names == ["model_3", "model_1"]  # order kept
    assert r.preset == "casp14"
    assert r.upload_key("ann") == "input/ann/lab/T1050.fasta"
    assert r.max_template_date == date(2021, 1, 31)
    assert r.strategy == "stop-at-score:85.5" and parse_strategy(r.strategy) == ("stop-at-score", 85.5)


BAD_VALUES = [
    ("fasta", ""),
    ("fasta", "a" * 101),
    ("fasta", "my job"),
    ("fasta", "../etc"),
    ("fasta", "-rf"),
    ("fasta", 5),
    ("file_name", "/etc/passwd"),
    ("file_name", "a/../../b.fasta"),
    ("file_name", ".."),
    ("file_name", "a\\b.fasta"),
    ("file_name", "a\x00b"),
    ("file_name", "a\nb"),
    ("file_name", ""),
    ("file_name", "a//b"),
    ("sequence", ""),
    ("sequence", "   \n"),
    ("sequence", "M" * 1_000_001),
    ("model_names", []),
    ("model_names", ["model_6"]),
    ("model_names", ["model_1", "model_1"]),
    ("model_names", "model_1,model_6"),
    ("model_names", " , "),
    ("preset", "fast"),
    ("preset", 1),
    ("db_preset", "small_dbs"),
    ("model_preset", "monomer_pTM2"),
    ("num_multimer_predictions_per_model", 5),
    ("models_to_relax", "some"),
    ("max_template_date", "14/05/2020"),
    ("max_template_date", "2020-02-30"),
    ("max_template_date", 1589414400),
    ("max_template_date", "2020-05-14T00:00:00"),
    ("max_template_date", (datetime.now(timezone.utc).date() + timedelta(days=2)).isoformat()),
    ("que", "urgent"),
    ("comment", "x" * 1001),
    ("comment", None),
    ("gpu", 0),
    ("gpu", 9),
    ("gpu", True),
    ("gpu", "2"),
    ("strategy", "first"),
    ("strategy", "stop-at-score:0"),
    ("strategy", "stop-at-score:101"),
    ("strategy", "stop-at-score:nan"),
    ("strategy", "stop-at-score:"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}"[:40] for f, v in BAD_VALUES])
def test_each_bad_field_value_is_rejected_naming_the_field(field: str, value: object) -> None:
    overrides: dict[str, object] = {field: value}
    if field == "file_name":
        overrides["sequence"] = None  # else the "exactly one" rule would be what fails
    err = parse_error(**overrides)
    assert err.field == field
    assert err.message.startswith(field)
    assert err.http_status == 422


def test_each_field_has_its_own_message() -> None:
    first_bad = {}
    for field, value in BAD_VALUES:
        first_bad.setdefault(field, value)
    messages = {}
    for field, value in first_bad.items():
        overrides: dict[str, object] = {field: value}
        if field == "file_name":
            overrides["sequence"] = None
        messages[field] = parse_error(**overrides).message
    assert len(set(messages.values())) == len(messages), messages


def test_future_template_date_message_says_future() -> None:
    tomorrow = (datetime.now(timezone.utc).date() + timedelta(days=2)).isoformat()
    assert "future" in parse_error(max_template_date=tomorrow).message


def test_template_date_today_is_accepted() -> None:
    today = datetime.now(timezone.utc).date()
    assert JobRequest.parse(request(max_template_date=today.isoformat())).max_template_date == today


@pytest.mark.parametrize("inputs", [{}, {"file_name": "x.fasta", "sequence": SEQ}])
def test_exactly_one_of_file_name_and_sequence(inputs: dict[str, object]) -> None:
    with pytest.raises(errors.ValidationError, match="exactly one of file_name"):
        JobRequest.parse({"fasta": "job1", **inputs})


def test_unknown_fields_are_rejected_by_name() -> None:
    err = parse_error(queue="low")
    assert err.field == "queue"
    assert "queue is not a request field" in err.message


def test_missing_job_name_is_reported() -> None:
    with pytest.raises(errors.ValidationError, match="fasta is required"):
        JobRequest.parse({"sequence": SEQ})


def test_several_errors_are_all_reported() -> None:
    err = parse_error(gpu=0, preset="fast")
    assert "gpu" in err.message and "preset" in err.message


def test_request_is_immutable() -> None:
    r = JobRequest.parse(request())
    with pytest.raises(pydantic.ValidationError):
        r.gpu = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("length", "queue"),
    [(16, "low"), (400, "low"), (401, "mid"), (1000, "mid"), (1001, "high"), (2000, "high"), (2001, "p4")],
)
def test_auto_queue_follows_the_longest_record(length: int, queue: str) -> None:
    assert JobRequest.parse(request()).queue_for(length) == queue


def test_auto_queue_table_ends_unlimited() -> None:
    assert list(AUTO_QUEUE_LIMITS.values())[-1] is None


def test_explicit_queue_is_not_overridden() -> None:
    assert JobRequest.parse(request(que="P4")).queue_for(10) == "p4"


def test_bare_sequence_becomes_a_record_named_after_the_job() -> None:
    records = JobRequest.parse(request(sequence=f"\n{SEQ[:20]}\n{SEQ[20:]}\n")).records()
    assert [(r.name, r.sequence) for r in records] == [("job1", SEQ)]


def test_fasta_text_keeps_its_own_names() -> None:
    text = f">A first\n{SEQ}\n>B\n{SEQ.lower()}\n"
    records = JobRequest.parse_sequence(text.encode(), name="ignored")
    assert [(r.name, r.description, r.sequence) for r in records] == [("A", "first", SEQ), ("B", "", SEQ)]


def test_bad_inline_fasta_raises_fasta_error() -> None:
    with pytest.raises(errors.FastaError):
        JobRequest.parse(request(sequence=f"{SEQ}\n>B\n{SEQ}")).records()  # sequence before the first header
    with pytest.raises(errors.FastaError):
        JobRequest.parse(request(sequence=SEQ + "B")).records()
    with pytest.raises(errors.FastaError):
        JobRequest.parse_sequence(b"\x1f\x8b\x08\x00", name="x")  # gzip: handed to parse_fasta untouched


def test_max_length_is_passed_on() -> None:
    with pytest.raises(errors.FastaError, match="longer than the maximum of 20"):
        JobRequest.parse(request()).records(max_length=20)


# --------------------------------------------------------------------------------------------------------------
# Job


def test_new_job_has_id_timestamps_and_queued_phase() -> None:
    job = Job(owner="ann", request=JobRequest.parse(request()), idempotency_key="k1")
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert job.updated_at == job.created_at
    assert job.phases["QUEUED"].started_at == job.created_at and job.phases["QUEUED"].ended_at is None
    assert datetime.fromisoformat(job.created_at).tzinfo is not None


def test_public_view_is_json_ready_and_hides_the_idempotency_key() -> None:
    job = Job(owner="ann", request=JobRequest.parse(request()), idempotency_key="k1")
    public = job.to_public()
    assert "idempotency_key" not in public
    assert public["state"] == "QUEUED" and public["finished"] is False
    assert public["request"]["max_template_date"] == "2020-05-14"
    back = Job.model_validate({k: v for k, v in public.items() if k != "finished"})
    assert back == job.model_copy(update={"idempotency_key": None})


# --------------------------------------------------------------------------------------------------------------
# State graph


def test_graph_matches_the_design() -> None:
    assert {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts} == ALLOWED
    assert set(TRANSITIONS) == set(JobState)


@pytest.mark.parametrize(("a", "b"), sorted(ALLOWED))
def test_allowed_moves(a: JobState, b: JobState) -> None:
    assert can_move(a, b)
    assert advance(a, b) is b


@pytest.mark.parametrize(("a", "b"), FORBIDDEN[::3])  # a sample; test_graph_matches_the_design covers the rest
def test_forbidden_moves(a: JobState, b: JobState) -> None:
    assert not can_move(a, b)
    with pytest.raises(errors.ConflictError):
        advance(a, b)


def test_terminal_and_unfinished() -> None:
    assert TERMINAL == {S.SUCCEEDED, S.FAILED, S.CANCELLED}
    assert UNFINISHED == set(JobState) - TERMINAL
    assert all(is_terminal(s) for s in TERMINAL)
    assert not any(is_terminal(s) for s in UNFINISHED)
    assert not can_move(S.MSA, S.MSA)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(JobState)), max_size=30))
def test_random_attempts_only_follow_the_graph(attempts: list[JobState]) -> None:
    state = S.QUEUED
    for target in attempts:
        before = state
        try:
            state = advance(state, target)
        except errors.ConflictError:
            assert (before, target) not in ALLOWED
            continue
        assert (before, state) in ALLOWED
        assert before not in TERMINAL  # nothing ever leaves a terminal state


@pytest.mark.parametrize("owner, prefix", [
    ("ann", "input/ann/"), ("ann@lab.org", "input/ann@lab.org/"), ("lab/ann", "input/lab%2Fann/"),
    ("..", "input/%2E%2E/"), (".", "input/%2E/"), ("a b", "input/a%20b/"), ("ünï", "input/%C3%BCn%C3%AF/"),
])
def test_each_owner_uploads_into_one_folder_of_its_own(owner: str, prefix: str) -> None:
    from af2jobs.layout import upload_prefix

    assert upload_prefix(owner) == prefix
    assert prefix.count("/") == 2  # input/<one segment>/


# --------------------------------------------------------------------------------------------------------------
# The original platform's request bodies (tests/data/requests: the shapes of its 2021 command.json and its 2022
# sampleParameters.json)

REQUESTS = Path(__file__).parents[1] / "data" / "requests"


def test_the_2021_command_items_parse_as_written() -> None:
    first, second, third = (JobRequest.parse(item) for item in json.loads((REQUESTS / "command_2021.json").read_text()))
    assert first.model_names == list(MODEL_NAMES) and (first.db_preset, first.model_preset) == ("full_dbs", "monomer_ptm")
    assert second.model_names == ["model_1"] and (second.preset, second.db_preset) == ("reduced", "reduced_dbs")
    assert (third.preset, third.db_preset, third.model_preset, third.models_to_relax) == (
        "full", "full_dbs", "monomer_ptm", "best")
    assert (first.que, first.gpu, second.que, third.que) == ("high", 4, "mid", "low")


def test_the_2022_items_parse_whole_multimer_items_included() -> None:
    items = json.loads((REQUESTS / "sample_parameters_2022.json").read_text())
    monomer, trimer, pair, casp14 = (JobRequest.parse(item) for item in items)
    assert (monomer.db_preset, monomer.model_preset, monomer.preset) == ("reduced_dbs", "monomer", None)
    assert (casp14.model_preset, casp14.max_template_date) == ("monomer_casp14", date(2020, 5, 14))
    assert (trimer.model_preset, trimer.predictions_per_model, pair.predictions_per_model) == ("multimer", 5, 1)
    assert monomer.predictions_per_model == 1
    assert JobRequest.parse({**items[1], "num_multimer_predictions_per_model": None}).predictions_per_model == 5


def test_a_multimer_request_reads_its_records_as_one_complex_whose_summed_length_is_limited() -> None:
    a, b = "MKTAYIAKQRQISFVKSHFS", "GSHMLEDPVRNLKERLEELK"
    request = JobRequest.parse({"fasta": "pair", "sequence": f">a\n{a}\n>b\n{b}\n>c\n{a}\n",
                                "model_preset": "multimer"})
    (complex_,) = request.records()
    assert complex_.name == "pair" and complex_.is_complex and complex_.sequence == a + b + a
    assert [c.name for c in complex_.chains] == ["a", "b", "c"]
    assert "A=a, B=b, C=c" in complex_.description
    with pytest.raises(errors.FastaError, match="60 residues in all .20 . 20 . 20., over the limit of 50"):
        request.records(max_length=50)
    monomers = JobRequest.parse({"fasta": "pair", "sequence": f">a\n{a}\n>b\n{b}\n"}).records()
    assert [r.is_complex for r in monomers] == [False, False]


@pytest.mark.parametrize("field", ["msa", "msa_file_names"])
def test_a_complex_refuses_its_own_msa_naming_the_field(field: str) -> None:
    with pytest.raises(errors.ValidationError) as info:
        JobRequest.parse({"fasta": "x", "sequence": "MKTAYIAKQR", "model_preset": "multimer",
                          field: {"x": "x.a3m" if field == "msa_file_names" else ">x\nMKTAYIAKQR\n"}})
    assert info.value.field == field and "complex" in info.value.message


@pytest.mark.parametrize(("spelling", "db", "model"), [
    ({"preset": "CASP14"}, "full_dbs", "monomer_casp14"),
    ({"preset": "Reduced", "db_preset": "REDUCED_DBS"}, "reduced_dbs", "monomer_ptm"),
    ({"db_preset": "full_dbs", "model_preset": "monomer_casp14"}, "full_dbs", "monomer_casp14"),
])
def test_preset_and_db_model_presets_are_one_choice(spelling: dict, db: str, model: str) -> None:
    r = JobRequest.parse(request(**spelling))
    assert (r.db_preset, r.model_preset) == (db, model)
    assert JobRequest.parse(r.model_dump(mode="json")) == r  # the stored form reads back the same


def test_two_spellings_that_disagree_are_refused() -> None:
    err = parse_error(preset="casp14", db_preset="reduced_dbs")
    assert err.field == "preset" and "casp14 means db_preset full_dbs" in err.message


def test_msa_mode_is_jackhmmer_unless_asked_and_carries_into_the_run() -> None:
    from af2jobs.jobrun import run_config_for
    from af2jobs.settings import Settings

    assert JobRequest.parse({"fasta": "a", "sequence": "MKTAYIAKQRQISFVK"}).msa_mode == "jackhmmer"
    request = JobRequest.parse({"fasta": "a", "sequence": "MKTAYIAKQRQISFVK", "msa_mode": "MMseqs2"})
    assert request.msa_mode == "mmseqs2"
    config, _ = run_config_for(request, Settings(), gpu=True)
    assert config.msa_mode == "mmseqs2"


def test_a_bad_msa_mode_is_refused_naming_it_and_mmseqs2_takes_complexes_too() -> None:
    with pytest.raises(errors.ValidationError, match="msa_mode must be one of jackhmmer, mmseqs2"):
        JobRequest.parse({"fasta": "a", "sequence": "MKTAYIAKQRQISFVK", "msa_mode": "blast"})
    complex_ = JobRequest.parse({"fasta": "a", "sequence": ">a\nMKTAYIAKQRQISFVK\n>b\nMQIFVKTLTGK\n",
                                 "msa_mode": "mmseqs2", "model_preset": "multimer"})
    assert (complex_.msa_mode, complex_.model_preset) == ("mmseqs2", "multimer")
