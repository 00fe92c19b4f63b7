"""One settings object for the whole platform (environment prefix AF2_)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_LENGTH = 16


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
    cpus: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # MSA depth caps (ColabFold's max-msa "clusters:extra"). Unset: 512:5120 on a GPU, 64:128 on a CPU.
    max_msa_clusters: int | None = Field(None, ge=1)
    max_extra_msa: int | None = Field(None, ge=1)
    num_recycle: int = Field(3, ge=0, le=48)
    msa_cache: bool = True

    @field_validator("data_dir", "db_root", "params_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @cached_property
    def database_root(self) -> Path:
        return self.db_root or self.data_dir / "databases"

    @cached_property
    def params_root(self) -> Path:
        return self.params_dir or self.data_dir / "params"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"
