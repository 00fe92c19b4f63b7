"""The job schema shared by the API, the CLI and the Batch re-read: JobRequest, Job, JobState, Principal."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from af2jobs import errors
from af2jobs.layout import upload_prefix
from af2jobs.runconfig import canonical_strategy

if TYPE_CHECKING:  # fasta.py is only needed when a request is parsed, not to build the schema.
    from af2jobs.fasta import FastaRecord


# ---------------------------------------------------------------------------------------------------------------
# States


class JobState(str, Enum):
    QUEUED = "QUEUED"
    VALIDATING = "VALIDATING"
    MSA = "MSA"
    PREDICTING = "PREDICTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


_S = JobState
# The only moves a job may make. Every writer (service, local worker, Step Functions tasks) goes through a
# conditional transition, so a move not listed here cannot happen whoever attempts it.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.VALIDATING, _S.CANCELLING, _S.CANCELLED, _S.FAILED}),
    _S.VALIDATING: frozenset({_S.MSA, _S.FAILED, _S.CANCELLING}),
    _S.MSA: frozenset({_S.PREDICTING, _S.FAILED, _S.CANCELLING}),
    _S.PREDICTING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELLING}),
    _S.CANCELLING: frozenset({_S.CANCELLED, _S.FAILED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
TERMINAL: frozenset[JobState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
UNFINISHED: frozenset[JobState] = frozenset(JobState) - TERMINAL
# States in which compute may be running: cancelling them needs the orchestrator, not just a record update.
RUNNING: frozenset[JobState] = frozenset({_S.VALIDATING, _S.MSA, _S.PREDICTING})


def can_move(current: JobState, to: JobState) -> bool:
    return JobState(to) in TRANSITIONS[JobState(current)]


def is_terminal(state: JobState) -> bool:
    return JobState(state) in TERMINAL


def advance(current: JobState, to: JobState) -> JobState:
    """The state after moving `current` to `to`; ConflictError if the graph forbids it."""
    if not can_move(current, to):
        raise errors.ConflictError(f"a job cannot move from {JobState(current).value} to {JobState(to).value}")
    return JobState(to)


class JobEvent(str, Enum):
    """What a Notifier is told about."""

    SUBMITTED = "submitted"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Principal:
    """Who is calling. Admins see and act on every owner's jobs."""

    owner: str
    admin: bool = False


# ---------------------------------------------------------------------------------------------------------------
# The request

MODEL_NAMES: tuple[str, ...] = ("model_1", "model_2", "model_3", "model_4", "model_5")
PRESETS: tuple[str, ...] = ("full", "reduced", "casp14")
QUEUES: tuple[str, ...] = ("low", "mid", "high", "p4", "auto")
DEFAULT_TEMPLATE_DATE = date(2020, 5, 14)
MAX_COMMENT = 1000
MAX_GPUS = 8
# An inline FASTA this large is a file upload in disguise; it belongs under input/.
MAX_INLINE_BYTES = 1_000_000

# What `que: auto` picks: the first queue whose limit holds the longest record (residues). GPU memory grows with
# the longest chain, and the seed's cost table shows one V100 running out of memory past ~1000 residues.
# None: no limit (the last resort).
AUTO_QUEUE_LIMITS: dict[str, int | None] = {"low": 400, "mid": 1000, "high": 2000, "p4": None}

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
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


def _check_object_name(value: str) -> str:
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
    model_names: list[str] = Field(default_factory=lambda: list(MODEL_NAMES))
    preset: str = "full"
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
        return _check_object_name(v)

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
        if not isinstance(v, (list, tuple)) or not v:
            raise _invalid(f"model_names must be a non-empty list drawn from {', '.join(MODEL_NAMES)}")
        unknown = [m for m in v if m not in MODEL_NAMES]
        if unknown:
            raise _invalid(f"model_names has unknown models {unknown}; choose from {', '.join(MODEL_NAMES)}")
        if len(set(v)) != len(v):
            raise _invalid("model_names must not repeat a model")
        return list(v)

    @field_validator("preset", mode="before")
    @classmethod
    def _preset(cls, v: Any) -> Any:
        # The seed writes "CASP14"; accept any case and keep the lower-case spelling.
        if not isinstance(v, str) or v.lower() not in PRESETS:
            raise _invalid(f"preset must be one of {', '.join(PRESETS)}")
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
        return self

    # -- helpers -------------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> JobRequest:
        """Validate untrusted input; pydantic's errors become one af2jobs ValidationError naming the field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _to_validation_error(exc) from None

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
        """The request's records: the inline sequence, or `text` read from file_name by the caller."""
        source = self.sequence if text is None else text
        if source is None:
            raise ValueError("records() needs the uploaded file's text for a file_name request")
        return self.parse_sequence(source, name=self.fasta, max_length=max_length)

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


def _to_validation_error(exc: pydantic.ValidationError) -> errors.ValidationError:
    messages: list[str] = []
    fields: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if loc:
            fields.append(loc)
        if err["type"] == _ERROR_TYPE or not loc:
            messages.append(err["msg"])  # ours already name the field
        elif err["type"] == "extra_forbidden":
            messages.append(f"{loc} is not a request field (known: {', '.join(JobRequest.model_fields)})")
        elif err["type"] == "missing":
            messages.append(f"{loc} is required")
        else:
            messages.append(f"{loc}: {err['msg']}")
    return errors.ValidationError("; ".join(messages), field=fields[0] if fields else None)


# ---------------------------------------------------------------------------------------------------------------
# The job record


def utc_now() -> str:
    """A UTC timestamp of fixed width, so text order is time order (pagination sorts on it)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_job_id() -> str:
    return uuid.uuid4().hex


class Phase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started_at: str
    ended_at: str | None = None


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    step: int = Field(0, ge=0)
    total: int | None = Field(None, ge=0)
    message: str = ""


class JobError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    stage: str | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_job_id, pattern=r"^[0-9a-f]{32}$")
    owner: str = Field(min_length=1, max_length=200)
    state: JobState = JobState.QUEUED
    request: JobRequest
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = ""
    phases: dict[str, Phase] = Field(default_factory=dict)
    progress: Progress | None = None
    error: JobError | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)
    cost: dict[str, Any] | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    version: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _defaults_from_creation(self) -> Job:
        # A new job has been updated when it was created and has been QUEUED since then.
        if not self.updated_at:
            self.updated_at = self.created_at
        if not self.phases:
            self.phases = {self.state.value: Phase(started_at=self.created_at)}
        return self

    @property
    def finished(self) -> bool:
        return is_terminal(self.state)

    def to_public(self) -> dict[str, Any]:
        """The API's view of a job: JSON-ready, without the caller's idempotency key."""
        out = self.model_dump(mode="json", exclude={"idempotency_key"})
        out["finished"] = self.finished
        return out
