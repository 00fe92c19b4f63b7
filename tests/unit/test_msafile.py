"""af2jobs.msafile: an MSA a request brings, checked before anything is stored (the line at fault named)."""

from __future__ import annotations

import pytest

from af2jobs import errors, msafile

Q = "MKTAYIAKQR"
A3M = f">query\n{Q}\n>hit1 some description\nMKTAYIA-QR\n>hit2\nMKTaaAYIAKQRk\n"
STO = f"# STOCKHOLM 1.0\n\nquery {Q[:5]}-{Q[5:]}\nhit1  MKTAY-IAKQR\n\nquery -\nhit1  -\n//\n"


def test_a3m_and_stockholm_of_the_query_pass_and_say_their_format():
    assert msafile.check(A3M, Q, "q") == msafile.Supplied("a3m", A3M)
    assert msafile.check(STO, Q, "q") == msafile.Supplied("sto", STO)
    # A BOM, Windows line ends: kept as plain text for AlphaFold's parsers.
    assert msafile.check("\ufeff" + A3M.replace("\n", "\r\n"), Q, "q") == msafile.Supplied("a3m", A3M)


def test_colabfold_a3m_with_its_header_line_passes_and_is_kept_without_comments():
    """ColabFold writes `#<lengths>\\t<cardinalities>` first (monomers too); '#' lines are no rows, and AlphaFold's
    parser would append them to the row before, so the text kept has none."""
    text = f"#{len(Q)}\t1\n>101\n{Q}\n# a comment inside\n>hit1\nMKTAYIA-QR\n"
    assert msafile.check(text, Q, "q") == msafile.Supplied("a3m", f">101\n{Q}\n>hit1\nMKTAYIA-QR\n")
    from alphafold.data import parsers

    kept = msafile.check(text, Q, "q").text
    assert parsers.parse_a3m(kept).sequences == [Q, "MKTAYIA-QR"]


@pytest.mark.parametrize(("text", "line", "says"), [
    ("", None, "empty"),
    ("MKT\n", 1, "not an MSA"),
    (f">query\n{Q[:-1]}\n", 1, "first row is not the query"),
    (">query\nM-KTAYIAKQR\n", 1, "first row is not the query"),
    (f">query\n{Q}\n>h\nMKTAYIAKQ\n", 3, "h has 9 match columns"),
    (f">query\n{Q}\n>h\nMKTAY1AKQR\n", 4, "'1' is not an alignment letter"),
    (f"MKT\n>query\n{Q}\n", 1, "not an MSA"),
    ("# STOCKHOLM 1.0\nquery MKTAYIAKQR\n", None, "does not end with '//'"),
    (f"#11\t1\n>q\n{Q}\n", 1, "header says the query has 11 residues; record 'rec1' has 10"),
    (f"#10,7\t1,1\n>101\t102\n{Q}MKTAYIA\n", 1, "a complex's (chains of 10, 7 residues)"),
    ("#10\t1\n# only comments\n", 2, "not an MSA"),
    (f"# STOCKHOLM 1.0\nquery {Q}\nhit MKTAYIAKQ\n//\n", 3, "hit has 9 columns"),
    (f"# STOCKHOLM 1.0\nhit {Q[::-1]}\nquery {Q}\n//\n", 2, "first row is not the query"),
    (f"# STOCKHOLM 1.0\nquery {Q} extra\n//\n", 2, "'<name> <aligned sequence>'"),
])
def test_a_bad_msa_is_refused_naming_the_record_and_the_line(text, line, says):
    with pytest.raises(errors.ValidationError) as info:
        msafile.check(text, Q, "rec1")
    where = "msa for record 'rec1'" + (f", line {line}" if line else "")
    assert info.value.message.startswith(where) and says in info.value.message, info.value.message
    assert info.value.field == "msa.rec1" and info.value.http_status == 422


def test_msa_arguments_are_matched_to_records(tmp_path):
    a, b = tmp_path / "a.a3m", tmp_path / "b.sto"
    a.write_text(A3M), b.write_text(STO)
    assert msafile.assign([str(a)], ["only"]) == {"only": a}
    assert msafile.assign([f"x={a}", f"y={b}"], ["x", "y"]) == {"x": a, "y": b}
    for values, says in (([str(a)], "name the record"), ([f"z={a}"], "no record z"), ([f"x={tmp_path}/no"], "does not exist")):
        with pytest.raises(errors.ValidationError, match=says):
            msafile.assign(values, ["x", "y"])
