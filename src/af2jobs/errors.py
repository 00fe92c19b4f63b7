"""Typed errors. Each maps to one HTTP status and one exit code in a single place (API / CLI)."""

from __future__ import annotations

import copy


class Af2JobsError(Exception):
    """Base of every error af2jobs raises on purpose."""

    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"error": type(self).__name__, "message": self.message, "field": self.field}

    def at(self, index: int) -> Af2JobsError:
        """The same error, about element `index` of a list (a batch of jobs): "element 1: ...", field "[1].x"."""
        located = copy.copy(self)
        located.message = f"element {index}: {self.message}"
        located.field = f"[{index}]" + (f".{self.field}" if self.field else "")
        located.args = (located.message,)
        return located


class ValidationError(Af2JobsError):
    """The caller's input is wrong; nothing was stored."""

    http_status = 422
    exit_code = 2


def pydantic_message(err: dict) -> str:
    """The message of one of pydantic's errors as a person should read it: without the "Value error, " or
    "Assertion failed, " pydantic puts before a validator's own text."""
    message = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


class FastaError(ValidationError):
    """A FASTA input is malformed. Names the record, line and column where known."""

    def __init__(
        self,
        message: str,
        *,
        record: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = "fasta",
    ) -> None:
        where = []
        if record is not None:
            where.append(f"record '{record}'")
        if line is not None:
            where.append(f"line {line}" + (f", column {column}" if column is not None else ""))
        full = f"FASTA {', '.join(where)}: {message}" if where else f"FASTA: {message}"
        super().__init__(full, field=field)
        self.record = record
        self.line = line
        self.column = column


class PayloadTooLargeError(ValidationError):
    http_status = 413


class AuthError(Af2JobsError):
    http_status = 401
    exit_code = 1


class ForbiddenError(Af2JobsError):
    http_status = 403
    exit_code = 1


class NotFoundError(Af2JobsError):
    http_status = 404
    exit_code = 1


class ConflictError(Af2JobsError):
    """The request conflicts with the current state (e.g. deleting a running job, a lost race)."""

    http_status = 409
    exit_code = 1


class ConfigurationError(Af2JobsError):
    """Settings are missing or inconsistent; raised at start-up, naming the variable."""


class DatabaseError(Af2JobsError):
    """A sequence database is missing, unreadable or could not be fetched."""


class StageError(Af2JobsError):
    """A pipeline stage failed. Carries the stage so jobs and notifications can say where."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


class MemoryLimitError(ValidationError):
    """A record's prediction needs more memory than where it would run has (af2jobs.admission)."""

    def __init__(self, message: str, *, field: str | None = None, stage: str = "validating") -> None:
        super().__init__(message, field=field)
        self.stage = stage


class PredictionDiedError(StageError):
    """The process predicting a job died under it (out of memory, a crash): that job fails, nothing else."""


class CancelledError(Af2JobsError):
    """A running stage noticed that its job was cancelled."""
