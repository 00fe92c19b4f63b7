"""The one request schema: what the API, the command line and the AWS tasks' re-read of a job all validate.

JobRequest takes the original platform's request bodies as written: the 2021 command.json item (`model_names` as
a comma-separated string, `preset` full | reduced | casp14 in any case) and its 2022 sampleParameters.json item
(`db_preset` full_dbs | reduced_dbs, `model_preset` monomer | monomer_ptm | monomer_casp14 | multimer,
`num_multimer_predictions_per_model`, `models_to_relax`). A value that cannot apply is refused with a message
naming the field.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from af2jobs import errors
from af2jobs.layout import upload_prefix
from af2jobs.runconfig import canonical_strategy

if TYPE_CHECKING:  # fasta.py is only needed when a request is parsed, not to build the schema.
    from af2jobs.fasta import FastaRecord
    from af2jobs.msafile import Supplied

MODEL_NAMES: tuple[str, ...] = ("model_1", "model_2", "model_3", "model_4", "model_5")
# AlphaFold 2.3's presets, and the original platform's 2021 `preset` spelling of the same choices.
DB_PRESETS: tuple[str, ...] = ("full_dbs", "reduced_dbs")
MSA_MODES: tuple[str, ...] = ("jackhmmer", "mmseqs2")
MODEL_PRESETS: tuple[str, ...] = ("monomer_ptm", "monomer", "monomer_casp14", "multimer")
PRESETS: dict[str, tuple[str, str]] = {
    "full": ("full_dbs", "monomer_ptm"),
    "reduced": ("reduced_dbs", "monomer_ptm"),
    "casp14": ("full_dbs", "monomer_casp14"),
}
RELAX: tuple[str, ...] = ("best", "all", "none")
QUEUES: tuple[str, ...] = ("low", "mid", "high", "p4", "auto")
DEFAULT_TEMPLATE_DATE = date(2020, 5, 14)
MAX_COMMENT = 1000
MAX_GPUS = 8
MAX_SEEDS = 25
DEFAULT_SEEDS = 5  # run_alphafold's num_multimer_predictions_per_model
# An inline FASTA this large is a file upload in disguise; it belongs under input/.
MAX_INLINE_BYTES = 1_000_000

# What `que: auto` picks: the first queue whose limit holds the longest record (residues). GPU memory grows with
# the longest chain, and the seed's cost table shows one V100 running out of memory past ~1000 residues.
# None: no limit (the last resort).
AUTO_QUEUE_LIMITS: dict[str, int | None] = {"low": 400, "mid": 1000, "high": 2000, "p4": None}

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RECORD_RE = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ERROR_TYPE = "af2jobs"  # marks our own messages, which already name the field


def _invalid(message: str) -> PydanticCustomError:
    # PydanticCustomError keeps the message as written (a plain ValueError gets a "Value error, " prefix).
    return PydanticCustomError(_ERROR_TYPE, message)


def _is_unicode(value: str) -> bool:
    """False for a str with lone surrogates (JSON allows the escape \\ud800): no store, file or table holds one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_file_name(value: str) -> str:
    if not value:
        raise _invalid("file_name must not be empty")
    if not _is_unicode(value):
        raise _invalid("file_name must be valid Unicode text (it holds a lone surrogate)")
    if _CONTROL_RE.search(value):
        raise _invalid("file_name must not contain control characters")
    if "\\" in value:
        raise _invalid("file_name must use '/' separators, not backslashes")
    if value.startswith("/"):
        raise _invalid("file_name must be relative to input/, not start with '/'")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise _invalid("file_name must not contain '..', '.' or empty path segments")
    if len(value) > 1000:
        raise _invalid("file_name must be at most 1000 characters")
    return value


def _parse_strategy(value: str) -> str:
    try:
        return canonical_strategy(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None


class JobRequest(BaseModel):
    """One prediction request (the seed's command.json, plus inline sequences and a strategy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fasta: str = Field(description="Job name: 1-100 letters, digits, '.', '_' or '-', starting alphanumeric.")
    file_name: str | None = Field(
        None, description="A FASTA file already uploaded to the caller's own folder, input/<owner>/ (the owner "
                          "percent-encoded); its path inside that folder.")
    sequence: str | None = Field(None, description="Inline FASTA text or a bare sequence.")
    model_names: Annotated[list[str], WithJsonSchema({
        "anyOf": [{"type": "array", "items": {"type": "string", "enum": list(MODEL_NAMES)}},
                  {"type": "string", "examples": ["model_1,model_2,model_3,model_4,model_5"]}]})] = Field(
        default_factory=lambda: list(MODEL_NAMES),
        description="The models to run: a list, or a comma-separated string (\"model_1,model_3\"). Stored as a list.")
    db_preset: str = Field("full_dbs", json_schema_extra={"enum": list(DB_PRESETS)}, description="full_dbs: BFD + UniRef30 by HHblits (with UniRef90 and MGnify "
                                                   "by jackhmmer); reduced_dbs: small BFD by jackhmmer instead.")
    msa_mode: str = Field(
        "jackhmmer", json_schema_extra={"enum": list(MSA_MODES)}, description="jackhmmer: AlphaFold's searches (HMMER, HH-suite) of db_preset's databases; "
                                 "mmseqs2: MMseqs2 of UniRef and an environmental database, as ColabFold searches.")
    model_preset: str = Field("monomer_ptm", json_schema_extra={"enum": list(MODEL_PRESETS)}, description="monomer_ptm: the pTM models (pTM and PAE); monomer: the "
                                                         "original models; monomer_casp14: monomer with 8 "
                                                         "ensembles; multimer: the FASTA's records are one complex "
                                                         "(AlphaFold-Multimer v3).")
    preset: str | None = Field(None, json_schema_extra={"enum": [*PRESETS, None]}, description="The 2021 spelling: full = full_dbs + monomer_ptm, reduced = "
                                                 "reduced_dbs + monomer_ptm, casp14 = full_dbs + monomer_casp14 "
                                                 "(any case). Filled in from db_preset and model_preset.")
    num_multimer_predictions_per_model: int | None = Field(
        None, description="Seeds per model for model_preset multimer (AlphaFold's default 5).")
    models_to_relax: str = Field("best", json_schema_extra={"enum": list(RELAX)}, description="Amber relaxation: best (the top-ranked model, AlphaFold's "
                                                     "default) | all | none.")
    msa: dict[str, str] | None = Field(
        None, description="Your own MSA for records (record name -> A3M or Stockholm text, the query first): their "
                          "search is skipped. Checked at submit; kept with the job's files, not on its record.")
    msa_file_names: dict[str, str] | None = Field(
        None, description="As msa, for MSAs uploaded to your folder input/<owner>/ (record name -> file_name).")
    max_template_date: date = DEFAULT_TEMPLATE_DATE
    que: str = "auto"
    comment: str = ""
    gpu: int = 1
    strategy: str = Field("all", description="best | all | stop-at-score:X (stop once a model reaches pLDDT X).")

    @field_validator("fasta", mode="before")
    @classmethod
    def _fasta(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _NAME_RE.fullmatch(v):
            raise _invalid(
                "fasta (the job name) must be 1-100 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("file_name", mode="before")
    @classmethod
    def _file_name(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, str):
            raise _invalid("file_name must be a string")
        return check_file_name(v)

    @field_validator("sequence", mode="before")
    @classmethod
    def _sequence(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, str) or not v.strip():
            raise _invalid("sequence must be non-empty FASTA text or a bare amino-acid sequence")
        if not _is_unicode(v):
            raise _invalid("sequence must be valid Unicode text (it holds a lone surrogate)")
        if len(v.encode()) > MAX_INLINE_BYTES:
            raise _invalid(f"sequence must be at most {MAX_INLINE_BYTES} bytes; upload larger inputs to input/")
        return v

    @field_validator("model_names", mode="before")
    @classmethod
    def _model_names(cls, v: Any) -> Any:
        if isinstance(v, str):  # the original platform's command.json: "model_1,model_2"
            v = [part.strip() for part in v.split(",") if part.strip()]
        if not isinstance(v, (list, tuple)) or not v:
            raise _invalid(f"model_names must be a non-empty list (or comma-separated string) drawn from "
                           f"{', '.join(MODEL_NAMES)}")
        unknown = [m for m in v if m not in MODEL_NAMES]
        if unknown:
            raise _invalid(f"model_names has unknown models {unknown}; choose from {', '.join(MODEL_NAMES)}")
        if len(set(v)) != len(v):
            raise _invalid("model_names must not repeat a model")
        return list(v)

    @model_validator(mode="before")
    @classmethod
    def _presets(cls, data: Any) -> Any:
        """preset (2021: full | reduced | casp14, any case) and db_preset/model_preset (AlphaFold 2.3's) are two
        spellings of one choice: each fills in the other. Values are checked by the fields' own validators; a
        request whose two spellings disagree is refused by _one_input."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        preset = data.get("preset")
        if isinstance(preset, str) and preset.lower() in PRESETS:
            for name, implied in zip(("db_preset", "model_preset"), PRESETS[preset.lower()]):
                data.setdefault(name, implied)
        elif preset is None:
            pair = tuple(str(data.get(name) or default).lower()
                         for name, default in (("db_preset", "full_dbs"), ("model_preset", "monomer_ptm")))
            data["preset"] = next((p for p, implied in PRESETS.items() if implied == pair), None)
        return data

    @field_validator("preset", mode="before")
    @classmethod
    def _preset(cls, v: Any) -> Any:
        if v is not None and (not isinstance(v, str) or v.lower() not in PRESETS):
            raise _invalid(f"preset must be one of {', '.join(PRESETS)} (the 2021 spelling of db_preset and "
                           "model_preset)")
        return v.lower() if v is not None else v

    @field_validator("db_preset", "msa_mode", "model_preset", mode="before")
    @classmethod
    def _choice(cls, v: Any, info: Any) -> Any:
        """One of the field's choices, in any case; stored lower-case."""
        choices = {"db_preset": DB_PRESETS, "msa_mode": MSA_MODES, "model_preset": MODEL_PRESETS}[info.field_name]
        if not isinstance(v, str) or v.lower() not in choices:
            raise _invalid(f"{info.field_name} must be one of {', '.join(choices)}")
        return v.lower()

    @field_validator("msa", "msa_file_names", mode="before")
    @classmethod
    def _msas(cls, v: Any, info: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, Mapping) or not v:
            raise _invalid(f"{info.field_name} must be an object: record name -> "
                           + ("MSA text" if info.field_name == "msa" else "file_name"))
        for record, value in v.items():
            if not isinstance(record, str) or not _RECORD_RE.fullmatch(record):
                raise _invalid(f"{info.field_name} names {str(record)[:60]!r}, which is no record name (a FASTA "
                               "header's first word)")
            if not isinstance(value, str) or not value.strip():
                raise _invalid(f"{info.field_name}[{record}] must be non-empty text")
            if info.field_name == "msa_file_names":
                check_file_name(value)
            elif not _is_unicode(value):
                raise _invalid(f"msa[{record}] must be valid Unicode text")
        return dict(v)

    @field_validator("num_multimer_predictions_per_model", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SEEDS):
            raise _invalid(f"num_multimer_predictions_per_model must be an integer from 1 to {MAX_SEEDS}")
        return v

    @field_validator("models_to_relax", mode="before")
    @classmethod
    def _relax(cls, v: Any) -> Any:
        if not isinstance(v, str) or v.lower() not in RELAX:
            raise _invalid(f"models_to_relax must be one of {', '.join(RELAX)}")
        return v.lower()

    @field_validator("max_template_date", mode="before")
    @classmethod
    def _template_date(cls, v: Any) -> Any:
        # Only a calendar date: pydantic's lax parsing would also take timestamps and datetimes.
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            with contextlib.suppress(ValueError):  # 2020-02-30: reported below like any other bad date
                v = date.fromisoformat(v)
        if type(v) is not date:
            raise _invalid("max_template_date must be an ISO date YYYY-MM-DD")
        if v > datetime.now(timezone.utc).date():
            raise _invalid(f"max_template_date {v.isoformat()} is in the future")
        return v

    @field_validator("que", mode="before")
    @classmethod
    def _que(cls, v: Any) -> Any:
        if not isinstance(v, str) or v.lower() not in QUEUES:
            raise _invalid(f"que must be one of {', '.join(QUEUES)}")
        return v.lower()

    @field_validator("comment", mode="before")
    @classmethod
    def _comment(cls, v: Any) -> Any:
        if not isinstance(v, str) or len(v) > MAX_COMMENT:
            raise _invalid(f"comment must be text of at most {MAX_COMMENT} characters")
        if not _is_unicode(v):
            raise _invalid("comment must be valid Unicode text (it holds a lone surrogate)")
        return v

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, v: Any) -> Any:
        # bool is an int subclass; `gpu: true` is a mistake, not one GPU.
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_GPUS:
            raise _invalid(f"gpu must be an integer from 1 to {MAX_GPUS}")
        return v

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise _invalid("strategy must be 'best', 'all' or 'stop-at-score:X' with 0 < X <= 100")
        return _parse_strategy(v)

    @model_validator(mode="after")
    def _one_input(self) -> JobRequest:
        if (self.file_name is None) == (self.sequence is None):
            raise _invalid("give exactly one of file_name (an object under input/) or sequence (inline FASTA)")
        if self.preset is not None and PRESETS[self.preset] != (self.db_preset, self.model_preset):
            db, model = PRESETS[self.preset]
            raise _invalid(f"preset {self.preset} means db_preset {db} and model_preset {model}, but the request "
                           f"gives db_preset {self.db_preset} and model_preset {self.model_preset}: give one "
                           "spelling")
        if self.model_preset == "multimer" and (self.msa or self.msa_file_names):
            raise _invalid(("msa" if self.msa else "msa_file_names") + " applies to monomer records: a complex "
                           "(model_preset multimer) is searched chain by chain")
        both = set(self.msa or {}) & set(self.msa_file_names or {})
        if both:
            raise _invalid(f"msa and msa_file_names both give record {sorted(both)[0]}: give one")
        if self.num_multimer_predictions_per_model is not None and self.model_preset != "multimer":
            raise _invalid("num_multimer_predictions_per_model applies to model_preset multimer only")
        return self

    # -- helpers -------------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> JobRequest:
        """Validate untrusted input; pydantic's errors become one af2jobs ValidationError naming the field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _to_validation_error(exc) from None

    def msa_upload_key(self, owner: str, record: str) -> str | None:
        """The store key of record's uploaded MSA (msa_file_names), in the owner's own folder; None if none."""
        name = (self.msa_file_names or {}).get(record)
        return None if name is None else upload_prefix(owner) + name

    def upload_key(self, owner: str) -> str | None:
        """The store key file_name names: inside the owner's own folder under input/, so that no one can submit
        (and so read) a file another owner uploaded. None for an inline sequence."""
        return None if self.file_name is None else upload_prefix(owner) + self.file_name

    @classmethod
    def parse_sequence(cls, text: str | bytes, *, name: str, max_length: int = 2500) -> list[FastaRecord]:
        """Parse FASTA text; a bare sequence (no '>' header) becomes one record called `name`."""
        from af2jobs.fasta import parse_fasta

        return parse_fasta(_with_header(text, name), max_length=max_length)

    def records(self, text: str | bytes | None = None, *, max_length: int = 2500) -> list[FastaRecord]:
        """What the request predicts: the records of the inline sequence (or of `text`, read from file_name by the
        caller), each its own monomer; for model_preset multimer one complex of them all (the job's name), whose
        summed length max_length limits."""
        from af2jobs.errors import FastaError
        from af2jobs.fasta import complex_record

        source = self.sequence if text is None else text
        if source is None:
            raise ValueError("records() needs the uploaded file's text for a file_name request")
        try:
            records = self.parse_sequence(source, name=self.fasta, max_length=max_length)
            if self.model_preset == "multimer":
                return [complex_record(records, self.fasta, max_length)]
        except FastaError as exc:
            exc.field = "sequence" if text is None else "file_name"  # the request field the FASTA came in
            raise
        return records

    def own_msas(self, records: list[FastaRecord],
                 uploaded: Callable[[str], str] | None = None) -> list[tuple[FastaRecord, Supplied]]:
        """The request's own MSAs (msa, and msa_file_names' texts as `uploaded(record name)` reads them), each
        checked against its record (msafile.check); ValidationError naming the first that names no record of the
        input, or is no MSA of its record. The API and `af2 predict` check them through here alike."""
        from af2jobs import msafile

        by_name = {r.name: r for r in records}
        fields = {**dict.fromkeys(self.msa or {}, "msa"), **dict.fromkeys(self.msa_file_names or {}, "msa_file_names")}
        unknown = sorted(set(fields) - set(by_name))
        if unknown:
            field = fields[unknown[0]]
            raise errors.ValidationError(f"{field} names record {unknown[0]}, which the input does not have (its "
                                         f"records: {', '.join(by_name)})", field=f"{field}.{unknown[0]}")
        out = []
        for name in fields:
            text = (self.msa or {}).get(name)
            if text is None:
                if uploaded is None:
                    raise ValueError("own_msas needs the uploaded files' reader for msa_file_names")
                text = uploaded(name)
            out.append((by_name[name], msafile.check(text, by_name[name].sequence, name)))
        return out

    @property
    def predictions_per_model(self) -> int:
        """Predictions each model makes: num_multimer_predictions_per_model (default 5) for a complex, else 1."""
        if self.model_preset != "multimer":
            return 1
        return self.num_multimer_predictions_per_model or DEFAULT_SEEDS

    def queue_for(self, longest: int) -> str:
        """The Batch queue: `que` as given, or for auto the first queue in AUTO_QUEUE_LIMITS that fits."""
        if self.que != "auto":
            return self.que
        for queue, limit in AUTO_QUEUE_LIMITS.items():
            if limit is None or longest <= limit:
                return queue
        raise AssertionError("AUTO_QUEUE_LIMITS must end with an unlimited queue")


_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _with_header(data: str | bytes, name: str) -> str | bytes:
    """`data` with a '>name' line added if it is clean text without any header (a bare sequence).

    Anything else goes to parse_fasta untouched, so that its diagnosis (binary file, control character, sequence
    before the first header) and line numbers refer to the input as given.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    else:
        text = data
    body = text.removeprefix("\ufeff")
    if _NOT_TEXT.search(body) or any(line.lstrip().startswith(">") for line in body.splitlines()):
        return data
    return f">{name}\n{body}"


def field_named_by(err: Mapping[str, Any]) -> str:
    """The field a whole-request rule of ours names first (its messages start with the field), else ''."""
    first = str(err.get("msg", "")).split(" ", 1)[0]
    return first if err.get("type") == _ERROR_TYPE and first in JobRequest.model_fields else ""


def _to_validation_error(exc: pydantic.ValidationError) -> errors.ValidationError:
    messages: list[str] = []
    fields: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or field_named_by(err)
        if loc:
            fields.append(loc)
        if err["type"] == _ERROR_TYPE or not loc:
            messages.append(err["msg"])  # ours already name the field
        elif err["type"] == "extra_forbidden":
            messages.append(f"{loc} is not a request field (known: {', '.join(JobRequest.model_fields)})")
        elif err["type"] == "missing":
            messages.append(f"{loc} is required")
        else:
            messages.append(f"{loc}: {errors.pydantic_message(err)}")
    return errors.ValidationError("; ".join(messages), field=fields[0] if fields else None)
