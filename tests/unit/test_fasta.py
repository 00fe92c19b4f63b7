"""FASTA parsing: what is accepted and normalised, what is rejected and where the error points."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from af2jobs.errors import FastaError
from af2jobs.fasta import AMINO_ACIDS, FastaRecord, parse_fasta, to_fasta
from af2jobs.settings import MIN_LENGTH

SEQ = "MKTAYIAKQRQISFVKSHFSRQ"  # 22 residues: above MIN_LENGTH, below one wrapped line
SEQ2 = "GSHMLEDPVDAFQLGSNQKE"


def only(data: str | bytes, **kwargs: int) -> FastaRecord:
    records = parse_fasta(data, **kwargs)
    assert len(records) == 1
    return records[0]


# --- accepted input -------------------------------------------------------------------------


def test_single_record() -> None:
    assert parse_fasta(f">p1\n{SEQ}\n") == [FastaRecord("p1", "", SEQ, 1)]


def test_header_splits_name_from_description() -> None:
    record = only(f">sp|P69905|HBA_HUMAN  Hemoglobin  alpha OS=Homo sapiens \n{SEQ}")
    assert (record.name, record.description) == ("sp|P69905|HBA_HUMAN", "Hemoglobin  alpha OS=Homo sapiens")


def test_space_after_marker_is_not_part_of_the_name() -> None:
    record = only(f">  p1 some protein\n{SEQ}")
    assert (record.name, record.description) == ("p1", "some protein")


def test_header_may_hold_any_printable_unicode() -> None:
    record = only(f">β-lactamase_Ω Escherichia coli — 25 °C ✓\n{SEQ}")
    assert (record.name, record.description) == ("β-lactamase_Ω", "Escherichia coli — 25 °C ✓")


def test_multi_line_record() -> None:
    assert only(f">p1\n{SEQ[:7]}\n{SEQ[7:15]}\n{SEQ[15:]}\n").sequence == SEQ


def test_lower_and_mixed_case_are_upper_cased() -> None:
    assert only(f">p1\n{SEQ.lower()}\n").sequence == SEQ
    assert only(f">p1\n{SEQ[:5].lower()}{SEQ[5:]}\n").sequence == SEQ


def test_blank_lines_anywhere() -> None:
    text = f"\n\n  \n>p1\n\n{SEQ[:10]}\n\t\n{SEQ[10:]}\n\n>p2\n\n{SEQ2}\n\n\n"
    assert parse_fasta(text) == [FastaRecord("p1", "", SEQ, 4), FastaRecord("p2", "", SEQ2, 10)]


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_line_endings(newline: str) -> None:
    text = newline.join([">p1 desc", SEQ[:10], SEQ[10:], ">p2", SEQ2, ""])
    assert parse_fasta(text) == [FastaRecord("p1", "desc", SEQ, 1), FastaRecord("p2", "", SEQ2, 4)]


def test_mixed_line_endings_count_lines_correctly() -> None:
    records = parse_fasta(f">p1\r\n{SEQ}\r>p2\n{SEQ2}")
    assert [(r.name, r.line) for r in records] == [("p1", 1), ("p2", 3)]


@pytest.mark.parametrize("data", [f"\ufeff>p1\n{SEQ}\n", f"\ufeff>p1\n{SEQ}\n".encode()])
def test_utf8_bom_is_dropped(data: str | bytes) -> None:
    assert only(data) == FastaRecord("p1", "", SEQ, 1)


def test_bytes_input_is_decoded_as_utf8() -> None:
    record = only(f">p1 Ångström protein\n{SEQ}\n".encode())
    assert record.description == "Ångström protein"


def test_whitespace_around_lines() -> None:
    assert only(f"  >p1 desc  \n   {SEQ[:10]}\t\n\t{SEQ[10:]}   \n") == FastaRecord("p1", "desc", SEQ, 1)


def test_spaces_and_tabs_inside_sequence_lines() -> None:
    spaced = " ".join(SEQ[i : i + 5] for i in range(0, len(SEQ), 5))
    assert only(f">p1\n{spaced}\n{SEQ2[:10]}\t{SEQ2[10:]}\n").sequence == SEQ + SEQ2


def test_unicode_spaces_inside_sequence_lines_are_whitespace() -> None:
    # Sequences pasted from word processors carry no-break spaces between blocks.
    assert only(f">p1\n{SEQ[:10]}\u00a0{SEQ[10:]}\n").sequence == SEQ


@pytest.mark.parametrize("ending", ["*", "*\n", "* \n", "\n*\n", "\n*\n\n; trailing comment\n"])
def test_one_terminal_stop_is_stripped(ending: str) -> None:
    assert only(f">p1\n{SEQ}{ending}").sequence == SEQ


def test_stop_ends_each_record_of_several() -> None:
    records = parse_fasta(f">p1\n{SEQ}*\n>p2\n{SEQ2}*\n")
    assert [r.sequence for r in records] == [SEQ, SEQ2]


def test_comment_lines_anywhere() -> None:
    text = f";file comment\n>p1\n;inside\n{SEQ[:10]}\n  ; indented\n{SEQ[10:]}\n;between\n>p2\n{SEQ2}\n;end"
    assert parse_fasta(text) == [FastaRecord("p1", "", SEQ, 2), FastaRecord("p2", "", SEQ2, 8)]


def test_several_records_keep_order_and_header_lines() -> None:
    text = f">c\n{SEQ}\n>a\n{SEQ2}\n>b\n{SEQ}X\n"
    records = parse_fasta(text)
    assert [(r.name, r.line, len(r.sequence)) for r in records] == [("c", 1, 22), ("a", 3, 20), ("b", 5, 23)]


def test_all_amino_acid_letters_and_x_are_accepted() -> None:
    assert only(f">p1\n{AMINO_ACIDS}\n").sequence == "ACDEFGHIKLMNPQRSTVWYX"


def test_lengths_at_the_limits_are_accepted() -> None:
    assert len(only(f">p1\n{'A' * MIN_LENGTH}\n").sequence) == MIN_LENGTH
    assert len(only(f">p1\n{'A' * 2500}\n").sequence) == 2500
    assert len(only(">p1\nMKV\n", min_length=3, max_length=3).sequence) == 3


@pytest.mark.parametrize(("min_length", "max_length"), [(0, 10), (20, 19)])
def test_impossible_limits_are_a_programming_error(min_length: int, max_length: int) -> None:
    with pytest.raises(ValueError, match="min_length"):
        parse_fasta(f">p1\n{SEQ}", min_length=min_length, max_length=max_length)


def test_non_text_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        parse_fasta(None)  # type: ignore[arg-type]


# --- rejected input -------------------------------------------------------------------------

LONG = "A" * 2501
BAD = [
    # (input, part of the message, line, column, record)
    ("", "empty input", None, None, None),
    (" \n\t\r\n  \n", "empty input", None, None, None),
    ("; only a comment\n;another\n", "only ';' comment lines", None, None, None),
    (f"{SEQ}\n", "missing header: FASTA records start with a line '>name'", 1, 1, None),
    (f"\n  {SEQ}\n{SEQ2}\n", "missing header", 2, 3, None),
    (f"{SEQ2}\n>p1\n{SEQ}\n", "sequence line before the first header", 1, 1, None),
    (f";comment\nMKV\n>p1\n{SEQ}\n", "sequence line before the first header", 2, 1, None),
    (f">\n{SEQ}\n", "header has no name", 1, 1, None),
    (f"> \n{SEQ}\n", "header has no name", 1, 1, None),
    (f">p1\n{SEQ}\n  >  \n{SEQ}\n", "header has no name", 3, 3, None),
    (f">p1\n\n>p2\n{SEQ}\n", "record has no sequence", 1, None, "p1"),
    (f">p1\n{SEQ}\n>p2\n*\n", "record has no sequence", 3, None, "p2"),
    (f">p1\nMKV1{SEQ}\n", "'1' is not an amino-acid letter", 2, 4, "p1"),
    (f">p1\n{SEQ}\n{SEQ[:3]}#\n", "'#' is not an amino-acid letter", 3, 4, "p1"),
    (f">p1\n{SEQ}\nMK>p2\n", "'>' is not an amino-acid letter", 3, 3, "p1"),
    (f">p1\nMKB{SEQ}\n", "'B' is an ambiguous or non-standard code (B = D or N): replace it with X", 2, 3, "p1"),
    (f">p1\n{SEQ}z\n", "'z' is an ambiguous or non-standard code (Z = E or Q)", 2, 23, "p1"),
    (f">p1\n  J{SEQ}\n", "'J' is an ambiguous or non-standard code (J = I or L)", 2, 3, "p1"),
    (f">p1\n{SEQ}U\n", "'U' is an ambiguous or non-standard code (U = selenocysteine", 2, 23, "p1"),
    (f">p1\no{SEQ}\n", "'o' is an ambiguous or non-standard code (O = pyrrolysine", 2, 1, "p1"),
    (f">p1\nMK--{SEQ}\n", "'-' is an alignment gap: alignments are not accepted, give the unaligned", 2, 3, "p1"),
    (f">p1\n{SEQ}..\n", "'.' is an alignment gap", 2, 23, "p1"),
    (f">p1\nMKV*{SEQ}\n", "'*' (stop) is only accepted once, as the very last character", 2, 4, "p1"),
    (f">p1\n{SEQ}*\nMKV\n", "'*' (stop) is only accepted once", 2, 23, "p1"),
    (f">p1\n{SEQ}**\n", "'*' (stop) is only accepted once", 2, 23, "p1"),
    (f">p1\n{SEQ}\n>p2\nMKV\n", "sequence is 3 residues long, shorter than the minimum of 16", 3, None, "p2"),
    (f">p1\n{LONG}\n", "sequence is 2501 residues long, longer than the maximum of 2500", 1, None, "p1"),
    (
        f">p1\n{SEQ}\n>p2\n{SEQ}\n>p1 again\n{SEQ}\n",
        "duplicate record name 'p1': already used by the record on line 1",
        5,
        2,
        "p1",
    ),
    (f">x/y\n{SEQ}\n>  x_y\n{SEQ}\n", "'x/y' (line 1) and 'x_y' (line 3) would both be stored as 'x_y'", 3, 4, "x_y"),
    (f">abc\n{SEQ}\n>ABC\n{SEQ}\n", "stored as 'abc' and 'ABC', which clash where case is ignored", 3, 2, "ABC"),
    (f">p1\nMK\u0391{SEQ}\n", "'Α' (U+0391 GREEK CAPITAL LETTER ALPHA) is not an amino-acid letter", 2, 3, "p1"),
    # Dotless i upper-cases to 'I' in Python: it must not slip through as isoleucine.
    (f">p1\n{SEQ}\u0131\n", "'ı' (U+0131", 2, 23, "p1"),
    (f">p1\n\uff21{SEQ}\n", "(U+FF21 FULLWIDTH LATIN CAPITAL LETTER A) is not an amino-acid letter", 2, 1, "p1"),
    (f">p1\n\u200b{SEQ}\n", "'\\u200b' (U+200B ZERO WIDTH SPACE)", 2, 1, "p1"),
    (b">p1\n\xff" + SEQ.encode(), "input is not text: byte 0xff at byte offset 4 is not UTF-8", 2, 1, None),
    (b"\xef\xbb\xbf>p\xe9\n", "byte 0xe9 at byte offset 5", 1, 3, None),
    (f">p1\nMK\x00{SEQ}", "input is not text: control character U+0000 (NUL) at byte offset 6", 2, 3, None),
    (f">p1 é\x07\n{SEQ}", "control character U+0007 at byte offset 6", 1, 6, None),
    (f">p1\n{SEQ}\x0c\n", "control character U+000C", 2, 23, None),
    (f">p1\n{SEQ}\ud800", "control character U+D800", 2, 23, None),
    (b"\x1f\x8b\x08\x00", "input is not text (byte offset 0): it looks like a gzip-compressed file", 1, 1, None),
    (b"PK\x03\x04rest", "looks like a zip archive", 1, 1, None),
    (b"\xff\xfe>\x00p\x00", "looks like UTF-16", 1, 1, None),
    ('{"sequence": "MKV"}', "input looks like JSON, not FASTA", 1, 1, None),
    ("\n  <!DOCTYPE html>\n<html>", "looks like HTML or XML", 2, 3, None),
    ("{\\rtf1\\ansi >p1 MKV}", "looks like RTF", 1, 1, None),
    ("LOCUS       NM_000518   626 bp    mRNA", "looks like GenBank", 1, 1, None),
    ("ID   HBA_HUMAN   Reviewed;   142 AA.", "looks like EMBL or UniProt", 1, 1, None),
    ("# STOCKHOLM 1.0\nseq1 MKV\n//", "looks like a Stockholm alignment", 1, 1, None),
    ("CLUSTAL W (1.83) multiple sequence alignment\n", "looks like a Clustal alignment", 1, 1, None),
    ("@read1\nACGT\n+\nIIII\n", "looks like FASTQ", 1, 1, None),
    ("ATOM      1  N   MET A   1", "looks like a PDB structure file", 1, 1, None),
    ("data_1ABC\n#\n", "looks like an mmCIF structure file", 1, 1, None),
    (f">P1;CRAB_ANAPL\nALPHA CRYSTALLIN B CHAIN\n{SEQ}*", "looks like PIR/NBRF", 1, 1, None),
]


@pytest.mark.parametrize(("data", "message", "line", "column", "record"), BAD)
def test_rejected(data: str | bytes, message: str, line: int | None, column: int | None, record: str | None) -> None:
    with pytest.raises(FastaError) as caught:
        parse_fasta(data)
    error = caught.value
    assert message in error.message
    assert (error.line, error.column, error.record) == (line, column, record)
    assert error.field == "fasta"


def test_length_limits_can_be_tightened() -> None:
    with pytest.raises(FastaError, match="22 residues long, longer than the maximum of 20") as caught:
        parse_fasta(f">p1\n{SEQ}", max_length=20)
    assert caught.value.line == 1
    with pytest.raises(FastaError, match="shorter than the minimum of 30"):
        parse_fasta(f">p1\n{SEQ}", min_length=30)


def test_first_problem_in_the_file_is_reported() -> None:
    with pytest.raises(FastaError) as caught:
        parse_fasta(f">p1\n{SEQ}\n>p2\nMK1\n>p1\n{SEQ}\n")
    assert (caught.value.record, caught.value.line, caught.value.column) == ("p2", 4, 3)


def test_message_locates_the_problem_for_humans() -> None:
    with pytest.raises(FastaError) as caught:
        parse_fasta(f">p1\nMK1{SEQ}")
    assert str(caught.value).startswith("FASTA record 'p1', line 2, column 3: '1' is not an amino-acid letter")


# --- slugs and output -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("sp|P69905|HBA_HUMAN", "sp_P69905_HBA_HUMAN"),
        ("my-protein.v2", "my-protein.v2"),
        ("a/../../etc", "a_.._.._etc"),
        ("", "_"),
        (".", "_"),
        ("..", "_."),
        (".hidden", "_hidden"),
        ("-rf", "_rf"),
        ("βlactamase", "_lactamase"),
    ],
)
def test_slug(name: str, slug: str) -> None:
    assert FastaRecord(name, "", SEQ, 1).slug == slug


def test_long_names_get_distinct_slugs_of_100_characters() -> None:
    first = FastaRecord("a" * 150 + "1", "", SEQ, 1).slug
    second = FastaRecord("a" * 150 + "2", "", SEQ, 1).slug
    assert len(first) == len(second) == 100
    assert first != second
    assert first.startswith("a" * 91 + "_")
    assert FastaRecord("a" * 100, "", SEQ, 1).slug == "a" * 100


def test_to_fasta_wraps_at_60_with_newline_endings() -> None:
    sequence = (AMINO_ACIDS * 7)[:125]
    text = to_fasta([FastaRecord("p1", "a protein", sequence, 1), FastaRecord("p2", "", SEQ, 5)])
    assert text == f">p1 a protein\n{sequence[:60]}\n{sequence[60:120]}\n{sequence[120:]}\n>p2\n{SEQ}\n"


def test_to_fasta_of_nothing_is_empty() -> None:
    assert to_fasta([]) == ""


@pytest.mark.parametrize(
    "record",
    [FastaRecord("", "", SEQ, 1), FastaRecord("two words", "", SEQ, 1), FastaRecord("p1", "a\nb", SEQ, 1)],
)
def test_to_fasta_refuses_records_that_would_not_parse_back(record: FastaRecord) -> None:
    with pytest.raises(ValueError):
        to_fasta([record])


# --- properties -----------------------------------------------------------------------------

NAME_CHARS = "ABCXYZabcxyz0189_-.|:/+=()"
names = st.text(NAME_CHARS, min_size=1, max_size=12)
descriptions = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=20).map(str.strip)
sequences = st.text(AMINO_ACIDS, min_size=MIN_LENGTH, max_size=200)
entries = st.lists(
    st.tuples(names, descriptions, sequences),
    min_size=1,
    max_size=4,
    # Records whose names clash as file names are rejected on purpose, so generate none.
    unique_by=lambda entry: FastaRecord(entry[0], "", "", 1).slug.lower(),
)


def canonical_records(entries: list[tuple[str, str, str]]) -> list[FastaRecord]:
    """The records with the header lines they get in to_fasta's layout."""
    records, line = [], 1
    for name, description, sequence in entries:
        records.append(FastaRecord(name, description, sequence, line))
        line += 1 + -(-len(sequence) // 60)
    return records


def messy_text(entries: list[tuple[str, str, str]], rng: random.Random) -> str:
    """The same records as a careless user or an odd tool might write them."""
    lines: list[str] = []
    for name, description, sequence in entries:
        if rng.random() < 0.3:
            lines.append(rng.choice(["", "  ", "; a comment"]))
        header = f"{rng.choice(['', ' '])}>{rng.choice(['', ' '])}{name}"
        if description:
            header += rng.choice([" ", "\t", "  "]) + description
        lines.append(header + rng.choice(["", " "]))
        residues = "".join(c.lower() if rng.random() < 0.5 else c for c in sequence)
        while residues:
            width = rng.randint(1, 80)
            lines.append(rng.choice(["", "\t"]) + residues[:width] + rng.choice(["", " "]))
            residues = residues[width:]
        if rng.random() < 0.3:
            lines[-1] += "*"
    newline = rng.choice(["\n", "\r\n", "\r"])
    return rng.choice(["", "\ufeff"]) + newline.join(lines) + rng.choice(["", newline])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=entries, rng=st.randoms(use_true_random=False), as_bytes=st.booleans())
def test_round_trip(entries: list[tuple[str, str, str]], rng: random.Random, as_bytes: bool) -> None:
    expected = canonical_records(entries)
    text = messy_text(entries, rng)
    parsed = parse_fasta(text.encode() if as_bytes else text)
    assert [(r.name, r.description, r.sequence) for r in parsed] == entries
    assert parse_fasta(to_fasta(expected)) == expected
    assert to_fasta(parsed) == to_fasta(expected)


# Pieces that exercise every branch of the parser far more often than random text would.
FASTA_PIECES = [*"ACDEGKXacbzu", *">;*-. \t\n\r", "\u0391", "\x00", "{", "@", "\ufeff", "\u00a0", ">p", ">q", SEQ]
fasta_like = st.tuples(
    st.sampled_from(["", ">p\n", ">p d\n"]), st.lists(st.sampled_from(FASTA_PIECES), max_size=40).map("".join)
).map("".join)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=80), fasta_like, fasta_like.map(str.encode), st.text(max_size=40)))
def test_any_input_gives_records_or_a_fasta_error(data: str | bytes) -> None:
    for min_length in (1, MIN_LENGTH):
        try:
            records = parse_fasta(data, min_length=min_length)
        except FastaError as error:
            assert error.message.strip()
            assert error.line is None or error.line >= 1
            assert error.column is None or (error.line is not None and error.column >= 1)
        else:
            assert records
            assert all(set(r.sequence) <= set(AMINO_ACIDS) and len(r.sequence) >= min_length for r in records)
