"""FASTA parsing and validation for protein sequences submitted for structure prediction.

Strict on purpose: a prediction holds a GPU for hours, so anything ambiguous is rejected up front,
naming the line and column to fix, rather than guessed at. The only changes made to the input are
the harmless normalisations listed in `parse_fasta`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from af2jobs.errors import FastaError
from af2jobs.settings import MIN_LENGTH

__all__ = ["AMINO_ACIDS", "FastaRecord", "complex_record", "parse_fasta", "to_fasta"]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWYX"
LINE_WIDTH = 60
SLUG_MAX = 100

_AMINO_SET = frozenset(AMINO_ACIDS)
_BOM = "\ufeff"
_NEWLINE = re.compile(r"\r\n|\r|\n")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Tab, LF and CR are the only control characters a text file needs; lone surrogates can only come
# from a str built out of broken data.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Fast path for the common, valid line; anything else goes character by character to find what
# is wrong and where.
_CLEAN_LINE = re.compile(f"[{AMINO_ACIDS}{AMINO_ACIDS.lower()}\\s]*")
_CONTROL_NAMES = {"\x00": "NUL", "\x1b": "ESC", "\x7f": "DEL"}

# Codes that are valid IUPAC but that AlphaFold2 cannot model: the user must decide what they mean.
_NON_STANDARD = {
    "B": "B = D or N",
    "Z": "Z = E or Q",
    "J": "J = I or L",
    "U": "U = selenocysteine, usually modelled as C",
    "O": "O = pyrrolysine, usually modelled as K",
}
_GAPS = frozenset("-.")

# Binary files users upload by mistake, recognised by their first bytes.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip-compressed file: decompress it first"),
    (b"PK\x03\x04", "a zip archive or Office document: export the sequence as plain text"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8 or plain ASCII"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8 or plain ASCII"),
)
# Other text formats, recognised by their first content line. Order matters: RTF before JSON.
_TEXT_FORMATS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\{\\rtf"), "RTF (rich text from a word processor): save it as plain text"),
    (re.compile(r"[{\[]"), "JSON"),
    (re.compile(r"<"), "HTML or XML (perhaps a web page saved instead of the sequence)"),
    (re.compile(r"%PDF"), "PDF"),
    (re.compile(r"LOCUS\s"), "GenBank"),
    (re.compile(r"ID {3}\S"), "EMBL or UniProt flat file"),
    (re.compile(r"# ?STOCKHOLM"), "a Stockholm alignment"),
    (re.compile(r"CLUSTAL"), "a Clustal alignment"),
    (re.compile(r"#NEXUS", re.IGNORECASE), "NEXUS"),
    (re.compile(r"@"), "FASTQ"),
    (re.compile(r"(HEADER|ATOM|HETATM|REMARK)\s"), "a PDB structure file"),
    (re.compile(r"data_"), "an mmCIF structure file"),
    (re.compile(r">(P1|F1|DL|DC|RL|RC|N1|N3|XX);"), "PIR/NBRF"),
)


@dataclass(frozen=True)
class FastaRecord:
    name: str
    description: str
    sequence: str
    line: int
    # A complex (model_preset multimer): its chains, in FASTA order; `sequence` is then their residues end to end,
    # so that its length is the summed length that limits, buckets, memory estimates and the queue go by.
    chains: tuple["FastaRecord", ...] = ()

    @property
    def slug(self) -> str:
        """A name safe as a file or directory name on any filesystem and in shell commands."""
        return _slug(self.name)

    @property
    def is_complex(self) -> bool:
        return bool(self.chains)


def complex_record(records: list[FastaRecord], name: str, max_length: int | None = None) -> FastaRecord:
    """The records of one FASTA as one complex (AlphaFold-Multimer reads a multi-record FASTA so): chains A, B, ...
    in their order. max_length limits the summed length, which is what the GPU holds."""
    if not records:
        raise FastaError("a complex needs at least one chain")
    total = sum(len(r.sequence) for r in records)
    if max_length is not None and total > max_length:
        lengths = " + ".join(str(len(r.sequence)) for r in records)
        raise FastaError(f"the complex has {total} residues in all ({lengths}), over the limit of {max_length}: "
                         "a complex is predicted as one structure, so its chains' summed length counts")
    if len(records) > len(CHAIN_IDS):
        raise FastaError(f"a complex holds at most {len(CHAIN_IDS)} chains (the PDB format's chain ids), not "
                         f"{len(records)}")
    description = f"complex of {len(records)} chain{'s' * (len(records) > 1)}: " + ", ".join(
        f"{CHAIN_IDS[i]}={r.name}" for i, r in enumerate(records))
    return FastaRecord(name, description, "".join(r.sequence for r in records), records[0].line, tuple(records))


# AlphaFold's protein.PDB_CHAIN_IDS: the chain ids of a complex's chains, in order.
CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def parse_fasta(
    data: str | bytes, *, max_length: int = 2500, min_length: int = MIN_LENGTH
) -> list[FastaRecord]:
    """Parse and validate protein FASTA; raise FastaError naming the first problem found.

    Accepted normalisations: UTF-8 BOM, CRLF/CR line endings, blank lines, ';' comment lines,
    whitespace around and inside sequence lines, lower case, one '*' ending a record.
    """
    if min_length < 1 or max_length < min_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length} and {max_length}")
    lines = _NEWLINE.split(_decode(data))
    _check_start(lines)
    return _parse_records(lines, min_length, max_length)


def to_fasta(records: Iterable[FastaRecord]) -> str:
    """Canonical FASTA text: one header line, residues wrapped at 60, '\\n' line endings; a complex is written as
    its chains, in order (as it was read)."""
    return "".join(_format_record(chain) for record in records for chain in (record.chains or (record,)))


# --- decoding -------------------------------------------------------------------------------


def _decode(data: str | bytes) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        text = _decode_bytes(bytes(data))
    elif isinstance(data, str):
        text = data
    else:
        raise TypeError(f"FASTA input must be str or bytes, not {type(data).__name__}")
    _check_control_characters(text)
    return text.removeprefix(_BOM)


def _decode_bytes(raw: bytes) -> str:
    for signature, what in _BINARY_SIGNATURES:
        if raw.startswith(signature):
            raise FastaError(f"input is not text (byte offset 0): it looks like {what}", line=1, column=1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The prefix is valid UTF-8 by construction, so it can place the bad byte in the text.
        line, column = _locate(raw[: exc.start].decode("utf-8"))
        raise FastaError(
            f"input is not text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} is not UTF-8 "
            "(save the file as plain text)",
            line=line,
            column=column,
        ) from None


def _check_control_characters(text: str) -> None:
    found = _NOT_TEXT.search(text)
    if found is None:
        return
    char = found.group()
    offset = len(text[: found.start()].encode("utf-8", "surrogatepass"))
    label = f"U+{ord(char):04X}" + (f" ({_CONTROL_NAMES[char]})" if char in _CONTROL_NAMES else "")
    line, column = _locate(text[: found.start()])
    raise FastaError(
        f"input is not text: control character {label} at byte offset {offset}", line=line, column=column
    )


def _locate(prefix: str) -> tuple[int, int]:
    """1-based line and column of the character that follows `prefix`."""
    lines = _NEWLINE.split(prefix.removeprefix(_BOM))
    return len(lines), len(lines[-1]) + 1


# --- structure ------------------------------------------------------------------------------


def _check_start(lines: list[str]) -> None:
    """Reject inputs that are empty, headerless or another format before reading any record."""
    seen_comment = False
    for index, raw in enumerate(lines):
        stripped = raw.strip()
        if stripped.startswith(";"):
            seen_comment = True
        elif stripped:
            _check_first_line(lines, index, raw)
            return
    if seen_comment:
        raise FastaError("no records: the input holds only ';' comment lines")
    raise FastaError("empty input: there is no FASTA record, only blank space")


def _check_first_line(lines: list[str], index: int, raw: str) -> None:
    stripped = raw.strip()
    line, column = index + 1, _first_column(raw)
    for pattern, name in _TEXT_FORMATS:
        if pattern.match(stripped):
            raise FastaError(f"input looks like {name}, not FASTA", line=line, column=column)
    if stripped.startswith(">"):
        return
    if any(other.strip().startswith(">") for other in lines[index + 1 :]):
        raise FastaError(
            "sequence line before the first header: every sequence needs a '>name' line above it",
            line=line,
            column=column,
        )
    raise FastaError("missing header: FASTA records start with a line '>name'", line=line, column=column)


def _parse_records(lines: list[str], min_length: int, max_length: int) -> list[FastaRecord]:
    records: list[FastaRecord] = []
    names: dict[str, int] = {}
    slugs: dict[str, tuple[str, int]] = {}
    current: _RecordBuilder | None = None
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(";"):
            continue
        if stripped.startswith(">"):
            if current is not None:
                records.append(current.finish(min_length, max_length))
            current = _start_record(raw, number, names, slugs)
        elif current is not None:  # _check_start guarantees a header comes first
            current.add_line(raw, number)
    if current is not None:
        records.append(current.finish(min_length, max_length))
    return records


def _start_record(
    raw: str, number: int, names: dict[str, int], slugs: dict[str, tuple[str, int]]
) -> _RecordBuilder:
    marker = _first_column(raw)
    words = raw.strip()[1:].split(None, 1)
    if not words:
        raise FastaError(
            "header has no name: write the name right after '>', e.g. '>my_protein'", line=number, column=marker
        )
    name = words[0]
    column = raw.index(name, marker) + 1
    if name in names:
        raise FastaError(
            f"duplicate record name '{name}': already used by the record on line {names[name]} "
            "(each record is its own prediction and needs its own name)",
            record=name,
            line=number,
            column=column,
        )
    # Compare without case: macOS and Windows filesystems would merge 'abc' and 'ABC'.
    key = _slug(name).lower()
    if key in slugs:
        other, other_line = slugs[key]
        stored = (
            f"would both be stored as '{_slug(name)}'"
            if _slug(name) == _slug(other)
            else f"would be stored as '{_slug(other)}' and '{_slug(name)}', which clash where case is ignored"
        )
        raise FastaError(
            f"record names '{other}' (line {other_line}) and '{name}' (line {number}) {stored}: "
            "rename one of them (use only letters, digits, '.', '_', '-')",
            record=name,
            line=number,
            column=column,
        )
    names[name] = number
    slugs[key] = (name, number)
    description = words[1] if len(words) > 1 else ""
    return _RecordBuilder(name, description, number)


def _first_column(raw: str) -> int:
    return len(raw) - len(raw.lstrip()) + 1


# --- sequences ------------------------------------------------------------------------------


class _RecordBuilder:
    """Collects one record's sequence lines; knows where its '*', if any, was."""

    def __init__(self, name: str, description: str, line: int) -> None:
        self.name = name
        self.description = description
        self.line = line
        self.chunks: list[str] = []
        self.stop: tuple[int, int] | None = None

    def add_line(self, raw: str, number: int) -> None:
        if self.stop is None and _CLEAN_LINE.fullmatch(raw):
            self.chunks.append("".join(raw.split()).upper())
            return
        for index, char in enumerate(raw):
            if not char.isspace():
                self._add_char(char, number, index + 1)

    def _add_char(self, char: str, line: int, column: int) -> None:
        if self.stop is not None:
            # Something follows a '*': the earlier '*' is the mistake, not what comes after it.
            raise FastaError(
                "'*' (stop) is only accepted once, as the very last character of a record; "
                "remove it, or start a new record with a '>name' line",
                record=self.name,
                line=self.stop[0],
                column=self.stop[1],
            )
        if char == "*":
            self.stop = (line, column)
            return
        # Only ASCII is upper-cased: 'ı'.upper() is 'I' and must not pass as isoleucine.
        residue = char.upper() if char.isascii() else char
        if residue not in _AMINO_SET:
            raise FastaError(_residue_problem(char), record=self.name, line=line, column=column)
        self.chunks.append(residue)

    def finish(self, min_length: int, max_length: int) -> FastaRecord:
        sequence = "".join(self.chunks)
        if not sequence:
            raise FastaError(
                "record has no sequence: put the amino-acid sequence on the lines after the header",
                record=self.name,
                line=self.line,
            )
        if len(sequence) < min_length:
            raise FastaError(
                f"sequence is {len(sequence)} residues long, shorter than the minimum of {min_length}",
                record=self.name,
                line=self.line,
            )
        if len(sequence) > max_length:
            raise FastaError(
                f"sequence is {len(sequence)} residues long, longer than the maximum of {max_length}",
                record=self.name,
                line=self.line,
            )
        return FastaRecord(self.name, self.description, sequence, self.line)


def _residue_problem(char: str) -> str:
    upper = char.upper() if char.isascii() else char
    if upper in _NON_STANDARD:
        return (
            f"{char!r} is an ambiguous or non-standard code ({_NON_STANDARD[upper]}): "
            "replace it with X, or with the residue you mean"
        )
    if char in _GAPS:
        return f"{char!r} is an alignment gap: alignments are not accepted, give the unaligned sequence"
    shown = repr(char)
    if not char.isascii():
        name = unicodedata.name(char, "")
        shown += f" (U+{ord(char):04X}{' ' + name if name else ''})"
    return f"{shown} is not an amino-acid letter (use the one-letter codes {AMINO_ACIDS[:-1]}, X for unknown)"


# --- output and names -----------------------------------------------------------------------


def _format_record(record: FastaRecord) -> str:
    # A name with whitespace or a field with a line break would parse back as something else.
    if not record.name or record.name.split() != [record.name]:
        raise ValueError(f"record name must be one word, got {record.name!r}")
    if any(_NEWLINE.search(field) for field in (record.description, record.sequence)):
        raise ValueError(f"record {record.name!r} has a line break in its description or sequence")
    header = f">{record.name} {record.description}" if record.description else f">{record.name}"
    seq = record.sequence
    body = [seq[start : start + LINE_WIDTH] for start in range(0, len(seq), LINE_WIDTH)]
    return "\n".join([header, *body]) + "\n"


def _slug(name: str) -> str:
    slug = _UNSAFE.sub("_", name) or "_"
    # A leading '.' hides the file (and makes '.' and '..'); a leading '-' reads as a shell option.
    if slug[0] in ".-":
        slug = "_" + slug[1:]
    if len(slug) > SLUG_MAX:
        # Two long names sharing a prefix must still get two directories.
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        slug = f"{slug[: SLUG_MAX - 9]}_{digest}"
    return slug
