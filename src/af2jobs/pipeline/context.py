"""The pipeline's context for a job's records: its settings and run, its progress and cancel hooks, the parameters
and databases it uses, and what its reports say of the job. af2jobs.pipeline.run's stages take it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from af2jobs.pipeline import compiled as compiled_mod
from af2jobs.pipeline import databases as db_mod
from af2jobs.pipeline import params as params_mod
from af2jobs.runconfig import RunConfig
from af2jobs.settings import Settings

StageProgress = Callable[[str, str, dict], None]  # (stage, event, details)


@dataclass
class Context:
    settings: Settings
    run: RunConfig
    progress: StageProgress = lambda stage, event, details: None
    should_cancel: Callable[[], bool] = lambda: False
    provider: params_mod.ParamsProvider | None = None
    databases: list[db_mod.Database] | None = None
    # What report.html says about the job: its comment, and the queue and GPU count its cost is priced on
    # (None: the queue `que: auto` picks for the record's length).
    comment: str = ""
    queue: str | None = None
    gpus: int = 1
    # The run the GPU stage will make, when the MSA stage is to prepare its processed features (inputs/): the AWS
    # MSA job for its GPU job. None: the predict stage processes them itself.
    inputs_run: RunConfig | None = None

    def __post_init__(self) -> None:
        s = self.settings
        if self.provider is None:
            self.provider = params_mod.ParamsProvider(s.params_root, s.cache_dir / "params-untrained")
        if self.databases is None:
            self.databases = db_mod.discover(s.database_root)
        # JAX's own variable wins: on AWS it points every Batch job at the shared file system's cache.
        compiled_mod.enable_compilation_cache(Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or s.cache_dir / "jax"))


__all__ = ["Context", "StageProgress"]
