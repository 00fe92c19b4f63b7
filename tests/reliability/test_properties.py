"""Hypothesis properties of the FASTA parser, the request schema and the job state graph (in the model and through
the SQLite repository). tests/unit/test_fasta.py and tests/unit/test_models.py hold the round trip from generated
records, "any input gives records or a FastaError" and random attempts on the model's graph; these add what they
leave out."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from af2jobs import errors
from af2jobs.adapters.local.sqlite import SqliteJobRepository
from af2jobs.fasta import AMINO_ACIDS, SLUG_MAX, FastaRecord, parse_fasta, to_fasta
from af2jobs.models import TERMINAL, TRANSITIONS, Job, JobState, advance, can_move
from af2jobs.request import JobRequest
from af2jobs.settings import MIN_LENGTH

S = JobState
SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------------------------
# FASTA

# Text that is FASTA often enough to reach the record-level branches, and broken in every way often enough to reach
# the error branches: headers, residues, case, blank and comment lines, stops, gaps, unicode and control characters.
PIECES = [">p1", ">p2 desc", ">q", "\n", "\r\n", "\r", " ", "\t", ";c\n", "*", "-", "\x00", "\x1b", "\u00a0",
          "\u202e", "\u0301", "\U0001f9ec", "\uff2d", "\u0391", "\ufeff", "B", "1", "<", "{", SEQ, SEQ.lower(),
          SEQ[:7], "\n" + SEQ + "\n"]
texts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=25).map("".join),
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(AMINO_ACIDS + AMINO_ACIDS.lower() + ">\n \r;*"), max_size=200),
)

# Mostly valid FASTA: unicode descriptions, mixed case, any wrapping, blank and comment lines, stops.
records = st.lists(
    st.tuples(
        st.text(alphabet=string.ascii_letters + string.digits + "_-.|:/", min_size=1, max_size=10),
        st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=15),
        st.text(alphabet=AMINO_ACIDS + AMINO_ACIDS.lower(), min_size=MIN_LENGTH, max_size=120),
        st.integers(1, 90),
        st.sampled_from(["", "*", "\n", "\n; note\n", "\n\n"]),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda r: FastaRecord(r[0], "", "", 1).slug.lower(),
)
fasta_texts = records.map(lambda rs: "".join(
    f">{name} {desc}\n" + "\n".join(seq[i : i + width] for i in range(0, len(seq), width)) + tail + "\n"
    for name, desc, seq, width, tail in rs
))


def outcome(data: str | bytes) -> tuple[str, Any]:
    """What parse_fasta makes of `data`: its records without line numbers, or its error's message."""
    try:
        return "ok", [(r.name, r.description, r.sequence) for r in parse_fasta(data)]
    except errors.FastaError as exc:
        return "error", exc.message


def without_offsets(result: tuple[str, Any]) -> tuple[str, Any]:
    """A result without byte offsets, which count the bytes of each line ending."""
    kind, value = result
    return kind, re.sub(r" at byte offset \d+", "", value) if kind == "error" else value


@FAST
@given(st.one_of(texts, fasta_texts))
def test_text_and_its_utf8_bytes_parse_alike(text: str) -> None:
    if re.search("[\ud800-\udfff]", text):
        return  # not encodable: bytes cannot hold it (the str is refused as a control character)
    assert outcome(text) == outcome(text.encode("utf-8"))


@FAST
@given(st.one_of(texts, fasta_texts), st.sampled_from(["\r\n", "\r"]))
def test_line_endings_do_not_change_the_result(text: str, newline: str) -> None:
    """Records and error positions alike: a Windows or old-Mac file reads as the Unix one."""
    if "\r" in text:
        return  # the replacement would merge existing "\r" + "\n" pairs
    assert without_offsets(outcome(text.replace("\n", newline))) == without_offsets(outcome(text))


@FAST
@given(fasta_texts)
def test_canonical_output_is_a_fixed_point(text: str) -> None:
    """Whatever is accepted, to_fasta writes it so that it parses back to the same records, and writing those
    again changes nothing."""
    kind, _ = outcome(text)
    event(kind)  # --hypothesis-show-statistics: how many examples were accepted
    if kind == "error":
        return
    records = parse_fasta(text)
    canonical = to_fasta(records)
    again = parse_fasta(canonical)
    assert [(r.name, r.description, r.sequence) for r in again] == [
        (r.name, r.description, r.sequence) for r in records
    ]
    assert to_fasta(again) == canonical


BAD_CHARS = st.sampled_from(["1", "B", "J", "O", "U", "Z", "-", ".", "<", "{", "#", "\u0391", "\u0131", "\uff2d",
                             "\U0001f9ec", "\u0301", "\u202e", "\u200b"])


@FAST
@given(
    sequence=st.text(alphabet=AMINO_ACIDS, min_size=MIN_LENGTH, max_size=150),
    width=st.integers(1, 80),
    bad=BAD_CHARS,
    at=st.integers(0, 10_000),
)
def test_one_wrong_character_is_reported_at_its_line_and_column(sequence: str, width: int, bad: str, at: int) -> None:
    at %= len(sequence) + 1
    broken = sequence[:at] + bad + sequence[at:]
    lines = [broken[i : i + width] for i in range(0, len(broken), width)]
    with pytest.raises(errors.FastaError) as caught:
        parse_fasta(">p\n" + "\n".join(lines) + "\n")
    line, column = 2 + at // width, at % width + 1
    assert (caught.value.record, caught.value.line, caught.value.column) == ("p", line, column), caught.value
    assert repr(bad) in caught.value.message or f"U+{ord(bad):04X}" in caught.value.message


@FAST
@given(st.text(max_size=300))
def test_every_name_gets_a_safe_file_name(name: str) -> None:
    slug = FastaRecord(name, "", "", 1).slug
    assert re.fullmatch(r"[A-Za-z0-9._-]+", slug) and len(slug) <= SLUG_MAX
    assert slug[0] not in ".-" and slug not in (".", "..")


@FAST
@given(text=texts, name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True))
def test_a_bare_sequence_or_any_text_gives_records_or_a_fasta_error(text: str, name: str) -> None:
    """JobRequest.parse_sequence adds a header to bare sequences; nothing it does may raise anything else."""
    try:
        records = JobRequest.parse_sequence(text, name=name)
    except errors.FastaError as exc:
        assert exc.field == "fasta" and exc.message
    else:
        assert records and all(set(r.sequence) <= set(AMINO_ACIDS) for r in records)


# ---------------------------------------------------------------------------------------------------------------
# The request schema: arbitrary JSON in, a ValidationError naming a field out (or a request that survives a trip)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIELDS = list(JobRequest.model_fields)
good_values = {
    "fasta": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True),
    "sequence": st.just(SEQ),
    "model_names": st.lists(st.sampled_from(["model_1", "model_2", "model_3"]), min_size=1, unique=True),
    "preset": st.sampled_from(["full", "REDUCED", "casp14"]),
    "max_template_date": st.sampled_from(["2020-05-14", "1999-01-31"]),
    "que": st.sampled_from(["low", "auto", "P4"]),
    "comment": st.text(max_size=50),
    "gpu": st.integers(1, 8),
    "strategy": st.sampled_from(["best", "all", "stop-at-score:85", "stop-at-score:99.5"]),
}
requests = st.fixed_dictionaries(
    # Mostly good, so that the other fields' validators are reached; sometimes anything.
    {name: st.one_of(good_values[name], good_values[name], json_values) for name in ("fasta", "sequence")},
    optional={
        **{f: st.one_of(good_values[f], json_values) for f in good_values if f not in ("fasta", "sequence")},
        "file_name": json_values | st.text(max_size=30),
        "extra": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(requests)
def test_any_json_request_is_a_request_or_a_validation_error_naming_a_field(data: dict[str, Any]) -> None:
    try:
        request = JobRequest.parse(data)
    except errors.ValidationError as exc:
        if exc.field is None:  # the one rule about two fields names both in its message
            assert "file_name" in exc.message and "sequence" in exc.message, exc.message
        else:
            assert exc.message and exc.field.split(".")[0] in {*FIELDS, *data}, exc.field
    else:
        # What the API stores and shows parses back to the same request.
        assert JobRequest.parse(request.model_dump(mode="json")) == request


# ---------------------------------------------------------------------------------------------------------------
# The state graph

def reachable(start: JobState) -> set[JobState]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_reachable_from_queued_can_finish_and_no_state_repeats() -> None:
    assert reachable(S.QUEUED) == set(JobState)  # no state is dead code
    for state in JobState:
        assert reachable(state) & TERMINAL, state  # nothing gets stuck
        assert all(state not in reachable(nxt) for nxt in TRANSITIONS[state])  # acyclic: every walk ends


@FAST
@given(st.data())
def test_a_random_walk_of_legal_moves_ends_terminal_within_five_moves(data: st.DataObject) -> None:
    state, path = S.QUEUED, [S.QUEUED]
    while TRANSITIONS[state]:
        state = advance(state, data.draw(st.sampled_from(sorted(TRANSITIONS[state]))))
        path.append(state)
    assert state in TERMINAL and len(path) <= 6 and len(set(path)) == len(path)
    for target in JobState:
        with pytest.raises(errors.ConflictError):
            advance(state, target)  # terminal stays terminal


# Through the repository: the SQLite file as the local server and worker share it.

@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteJobRepository]:
    r = SqliteJobRepository(tmp_path_factory.mktemp("props") / "jobs.sqlite3")
    yield r
    r.close()


REQUEST = JobRequest.parse({"fasta": "job1", "sequence": SEQ})
attempts = st.lists(
    st.tuples(st.sets(st.sampled_from(list(JobState)), min_size=1, max_size=3), st.sampled_from(list(JobState))),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attempts)
def test_repository_transitions_keep_the_invariants(
    repo: SqliteJobRepository, moves: list[tuple[set[JobState], JobState]]
) -> None:
    job = repo.create(Job(owner="ann", request=REQUEST))
    path = [S.QUEUED]
    for expected, to in moves:
        before = repo.get(job.id)
        legal = all(can_move(s, to) for s in expected)
        try:
            after = repo.transition(job.id, expected, to)
        except ValueError:
            assert not legal  # outside the graph: a caller bug, refused whatever the job's state
            assert repo.get(job.id) == before
            continue
        except errors.ConflictError:
            assert legal and before.state not in expected
            assert repo.get(job.id) == before  # a lost race changes nothing
            continue
        assert legal and before.state in expected and can_move(before.state, to)
        assert after == repo.get(job.id) and after.state is to and after.version == before.version + 1
        assert after.updated_at >= before.updated_at
        path.append(to)
    final = repo.get(job.id)
    # One phase per state on the path; every phase but the current one has ended; a terminal one at once.
    assert set(final.phases) == {s.value for s in path} and final.state is path[-1]
    assert all(p.ended_at is not None for state, p in final.phases.items() if state != final.state.value)
    current = final.phases[final.state.value]
    assert (current.ended_at == current.started_at) if final.finished else current.ended_at is None
    assert final.version == len(path)
    # Only a finished job may be deleted.
    if final.finished:
        repo.delete(job.id)
        with pytest.raises(errors.NotFoundError):
            repo.get(job.id)
    else:
        with pytest.raises(errors.ConflictError):
            repo.delete(job.id)
        assert repo.get(job.id) == final


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(TERMINAL)), st.lists(st.sampled_from(list(JobState)), min_size=1, max_size=8))
def test_a_finished_job_in_the_repository_never_moves_again(
    repo: SqliteJobRepository, terminal: JobState, targets: list[JobState]
) -> None:
    job = repo.create(Job(owner="ann", request=REQUEST))
    route = {S.SUCCEEDED: [S.VALIDATING, S.MSA, S.PREDICTING, S.SUCCEEDED], S.FAILED: [S.FAILED],
             S.CANCELLED: [S.CANCELLED]}[terminal]
    for to in route:
        job = repo.transition(job.id, {job.state}, to)
    for to in targets:
        # From its own state the move is outside the graph; expected from every state that could make it, it is a
        # conflict (the job is in none of them). Either way the record stays as it was.
        with pytest.raises(ValueError):
            repo.transition(job.id, {job.state}, to)
        sources = {s for s in JobState if can_move(s, to)}
        if sources:
            with pytest.raises(errors.ConflictError):
                repo.transition(job.id, sources, to)
        assert repo.get(job.id) == job
