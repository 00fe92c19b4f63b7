"""One settings object for the whole platform (environment prefix AF2_)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_LENGTH = 16
_AWS_REQUIRED = ("jobs_table", "keys_table", "bucket", "state_machine_arn", "topic_arn")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "af2jobs"


class Settings(BaseSettings):
    """Settings read from AF2_* environment variables (or keyword arguments in code and tests)."""

    model_config = SettingsConfigDict(env_prefix="AF2_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state: jobs, caches, outputs.")
    db_root: Path | None = Field(None, description="AlphaFold database layout root (default: DATA_DIR/databases).")
    params_dir: Path | None = Field(
        None, description="Directory holding official params_model_*.npz (default: DATA_DIR/params)."
    )
    max_length: int = Field(2500, ge=MIN_LENGTH, description="Longest sequence accepted.")
    # What one job may hold (af2jobs.admission): past these a submission is refused with its estimate.
    max_job_records: int = Field(1000, ge=1, description="Most FASTA records in one job.")
    max_job_residues: int = Field(2_000_000, ge=MIN_LENGTH, description="Most residues in one job, all records.")
    cpus: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # MSA depth caps (ColabFold's max-msa "clusters:extra"). Unset: 512:5120 on a GPU, 64:128 on a CPU.
    max_msa_clusters: int | None = Field(None, ge=1)
    max_extra_msa: int | None = Field(None, ge=1)
    num_recycle: int = Field(3, ge=0, le=48)
    msa_cache: bool = True
    # Run on UNTRAINED parameters (said in every output) when the official ones are not loaded: the default on one
    # machine, where `make demo` runs so; the AWS stack sets it from its AllowUntrained parameter (default false),
    # so that a job submitted before the parameters are loaded fails at once, saying so.
    allow_untrained: bool = True
    # CUDA unified memory, as ColabFold sets it: device allocations may spill into host memory, so a sequence longer
    # than the GPU's memory holds runs (slower) instead of failing. Read when JAX starts its GPU backend.
    unified_memory: bool = False
    # The memory one prediction may use (af2jobs.memory's estimate is held to it before a record runs, and on a CPU
    # a prediction process that goes past it is stopped). Unset: the GPU's memory, or this machine's less 2 GiB.
    prediction_memory_gb: float | None = Field(None, gt=0)
    max_request_bytes: int = Field(1 << 20, ge=1024, description="Largest API request body / inline FASTA.")
    max_upload_bytes: int = Field(256 << 20, ge=1024, description="Largest file the local server takes at PUT /uploads.")

    # Where the platform runs. "local": SQLite, a directory, an in-process worker. "aws": DynamoDB, S3,
    # Step Functions, SNS; each AWS name below is then required and a missing one fails at start-up.
    mode: Literal["local", "aws"] = "local"
    region: str | None = None
    jobs_table: str | None = None
    keys_table: str | None = None
    bucket: str | None = None
    state_machine_arn: str | None = None
    topic_arn: str | None = None
    batch_log_group: str | None = None  # the Batch jobs' CloudWatch log group: live logs of running stages
    # The mail's links go through the API (af2jobs.links), signed with this Secrets Manager secret; without it
    # (or without api_url) they are presigned S3 URLs, which die with the signing session.
    link_secret_arn: str | None = None
    link_seconds: int = Field(7 * 24 * 3600, ge=3600, le=90 * 24 * 3600,
                              description="How long the links in a job's mail work.")

    # Local server and worker (`af2 serve`).
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    cpu_workers: int = Field(1, ge=0)
    gpus: str = ""  # "0,1": one predict slot per GPU; empty: one slot on whatever JAX sees

    # Local notifications: always an outbox file; SMTP and a webhook when configured.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "af2jobs@localhost"
    notify_email: str | None = None
    webhook_url: str | None = None

    # The command line's API client.
    api_url: str | None = None
    api_key: str | None = None

    @field_validator("data_dir", "db_root", "params_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @model_validator(mode="after")
    def _aws_names(self) -> "Settings":
        if self.mode == "aws":
            missing = [f"AF2_{name.upper()}" for name in _AWS_REQUIRED if not getattr(self, name)]
            if missing:
                from af2jobs.errors import ConfigurationError

                raise ConfigurationError(f"AF2_MODE=aws needs {', '.join(missing)}")
        return self

    @cached_property
    def database_root(self) -> Path:
        return self.db_root or self.data_dir / "databases"

    @cached_property
    def params_root(self) -> Path:
        return self.params_dir or self.data_dir / "params"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def jobs_db(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def link_secret_file(self) -> Path:
        return self.data_dir / "link.secret"


def apply_device_memory(settings: Settings) -> None:
    """AF2_UNIFIED_MEMORY into the variables XLA reads when JAX starts its GPU backend (values already in the
    environment win). The entry points call this before anything touches a device."""
    if settings.unified_memory:
        os.environ.setdefault("TF_FORCE_UNIFIED_MEMORY", "1")
        # Up to 4x the device's memory, the rest in host memory (ColabFold's setting).
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "4.0")
