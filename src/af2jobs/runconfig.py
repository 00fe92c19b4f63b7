"""One typed run configuration for a prediction, validated once (no flag sprawl). Light: no jax here."""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Literal

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from af2jobs.settings import Settings

MODEL_NAMES = ("model_1", "model_2", "model_3", "model_4", "model_5")
CASP14_ENSEMBLES = 8  # AlphaFold's model_config('model_1') with CONFIG_DIFFS monomer_casp14: eval.num_ensemble 8
# AlphaFold-Multimer's own defaults (its config, and run_alphafold's num_multimer_predictions_per_model): up to 20
# recycles, stopping once the structure moves less than 0.5 A; 5 seeds per model.
MULTIMER_RECYCLES = 20
MULTIMER_TOLERANCE = 0.5
MULTIMER_SEEDS = 5
_STOP_AT = re.compile(r"^stop-at-score:(.+)$")


def canonical_strategy(value: str) -> str:
    """The one spelling of a strategy that every part of the platform stores and parses back."""
    kind, threshold = parse_strategy(value)
    return kind if threshold is None else f"stop-at-score:{threshold:g}"


def parse_strategy(value: str) -> tuple[str, float | None]:
    """'best' | 'all' | 'stop-at-score:X' (0 < X <= 100) -> (kind, threshold)."""
    value = value.strip().lower()
    if value in ("best", "all"):
        return value, None
    match = _STOP_AT.match(value)
    if match:
        try:
            threshold = float(match.group(1))
        except ValueError:
            threshold = math.nan
        if 0 < threshold <= 100:  # also rejects nan
            return "stop-at-score", threshold
    raise ValueError(f"strategy must be 'best', 'all' or 'stop-at-score:X' with 0 < X <= 100, not {value!r}")


class RunConfig(BaseModel):
    """What to run for one prediction. Presets are data: see `profile`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_names: tuple[str, ...] = MODEL_NAMES
    strategy: str = "all"
    num_recycle: int = Field(3, ge=0, le=48)
    # AlphaFold 2.3's presets. db_preset picks the MSA's databases: full_dbs searches BFD + UniRef30 with HHblits,
    # reduced_dbs small BFD with jackhmmer (both: UniRef90 and MGnify with jackhmmer). model_preset picks the
    # parameters: monomer_ptm the pTM models (pTM and the predicted aligned error), monomer the original ones,
    # monomer_casp14 the original ones averaged over 8 ensembles (AlphaFold's CASP14 configuration), multimer the
    # AlphaFold-Multimer v3 models for a complex (ranked by 0.8 ipTM + 0.2 pTM).
    db_preset: Literal["full_dbs", "reduced_dbs"] = "full_dbs"
    # jackhmmer: AlphaFold's own searches (db_preset's databases); mmseqs2: MMseqs2 of UniRef and an environmental
    # database, as ColabFold searches (af2jobs.pipeline.mmseqs), with the same template search.
    msa_mode: Literal["jackhmmer", "mmseqs2"] = "jackhmmer"
    model_preset: Literal["monomer_ptm", "monomer", "monomer_casp14", "multimer"] = "monomer_ptm"
    # model_preset multimer: predictions (seeds) per model; 5 models x 5 seeds = 25, as AlphaFold makes them.
    num_multimer_predictions_per_model: int = Field(MULTIMER_SEEDS, ge=1, le=25)
    rank_by: Literal["plddt", "ptm"] = "plddt"
    # Templates released after this date are not used (AlphaFold's max_template_date); None: no limit (today).
    max_template_date: date | None = None
    # Amber relaxation (AlphaFold's relax on OpenMM): best = the top-ranked model (AlphaFold 2.3's default).
    models_to_relax: Literal["best", "all", "none"] = "best"
    max_msa_clusters: int = Field(512, ge=1)
    max_extra_msa: int = Field(5120, ge=1)
    # Caps an MSA shallower than them does not fill are lowered to a step above its depth (fitted_to), as ColabFold
    # sizes them: the rows AlphaFold would pad are masked out, so the model computes the same, on fewer rows.
    fit_msa_to_depth: bool = True
    # "full": AlphaFold2's published architecture. "tiny": 1 Evoformer block, 1 extra-MSA block, 2 structure layers,
    # same code path; for tests and smoke checks on a CPU. Outputs say which ran.
    profile: Literal["full", "tiny"] = "full"
    random_seed: int = 0
    # Pad the length up to a bucket so nearby lengths share one compiled function (on by default on a GPU).
    length_buckets: bool = False
    # Stop recycling once the CA distance map moves less than this (Angstrom); 0 runs every recycle, as AlphaFold.
    recycle_tolerance: float = Field(0.0, ge=0.0)
    # bfloat16 activations (AlphaFold's default); False runs the float32 path, for numerical comparisons.
    bfloat16: bool = True
    # Devices one prediction may use. With strategy `all`, models run on separate devices in parallel, each taking
    # the next model when it is free; the other strategies decide on each model in turn and use one device.
    gpus: int = Field(1, ge=1, le=8)

    @field_validator("model_names", mode="before")
    @classmethod
    def _models(cls, v):
        names = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        names = tuple(n.strip() for n in names if n.strip())
        if not names:
            raise ValueError("at least one model is needed")
        for n in names:
            if n not in MODEL_NAMES:
                raise ValueError(f"unknown model {n!r}; choose from {', '.join(MODEL_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError("a model is named twice")
        return names

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return canonical_strategy(v)

    @property
    def use_ptm(self) -> bool:
        return self.model_preset == "monomer_ptm"

    @property
    def multimer(self) -> bool:
        return self.model_preset == "multimer"

    @property
    def seeds(self) -> int:
        """Predictions per model: each with its own random seed for a complex; one for a monomer."""
        return self.num_multimer_predictions_per_model if self.multimer else 1

    def variant(self, model_name: str) -> str:
        """The parameter set of a model under this preset: model_1_ptm, model_1, model_1_multimer_v3."""
        if self.multimer:
            return f"{model_name}_multimer_v3"
        return f"{model_name}_ptm" if self.use_ptm else model_name

    def prediction_name(self, model_name: str, seed_index: int) -> str:
        """AlphaFold's name of one prediction: model_1_multimer_v3_pred_0 for a complex, model_1 for a monomer."""
        return f"{self.variant(model_name)}_pred_{seed_index}" if self.multimer else model_name

    def seed_of(self, model_index: int, seed_index: int) -> int:
        """The random seed of one prediction of a complex, as run_alphafold derives it over its model runners
        (model_1_multimer_v3_pred_0, _pred_1, ..., model_2_...): runner index + random_seed * runners."""
        if not self.multimer:
            return self.random_seed
        runners = len(self.model_names) * self.seeds
        return model_index * self.seeds + seed_index + self.random_seed * runners

    def fitted_to(self, depth: int) -> "RunConfig":
        """This run with MSA caps no larger than an MSA of `depth` rows needs (fit_msa_caps); itself when they
        already are, or when fit_msa_to_depth is off."""
        if not self.fit_msa_to_depth:
            return self
        clusters, extra = fit_msa_caps(depth, self.max_msa_clusters, self.max_extra_msa)
        if (clusters, extra) == (self.max_msa_clusters, self.max_extra_msa):
            return self
        return self.model_copy(update={"max_msa_clusters": clusters, "max_extra_msa": extra})

    @property
    def num_ensemble(self) -> int:
        return CASP14_ENSEMBLES if self.model_preset == "monomer_casp14" else 1

    @property
    def strategy_kind(self) -> str:
        return parse_strategy(self.strategy)[0]

    @property
    def stop_threshold(self) -> float | None:
        return parse_strategy(self.strategy)[1]


# ColabFold's max-msa defaults: full depth on a GPU; a CPU keeps the demo quick.
GPU_MSA_CAPS = (512, 5120)
CPU_MSA_CAPS = (64, 128)


def resolve(settings: Settings, *, gpu: bool, **overrides) -> RunConfig:
    """Settings and the caller's choices into one RunConfig for a prediction on a GPU (gpu=True) or a CPU: the MSA
    caps default by device, and a GPU pads lengths to buckets. A complex gets AlphaFold-Multimer's recycling."""
    clusters, extra = GPU_MSA_CAPS if gpu else CPU_MSA_CAPS
    values = {
        "length_buckets": gpu,
        "num_recycle": settings.num_recycle,
        "max_msa_clusters": settings.max_msa_clusters or clusters,
        "max_extra_msa": settings.max_extra_msa or extra,
    }
    if overrides.get("model_preset") == "multimer":  # AlphaFold-Multimer's recycling, unless the caller sets it
        values.update(num_recycle=MULTIMER_RECYCLES, recycle_tolerance=MULTIMER_TOLERANCE)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig(**values)


MSA_CLUSTER_STEPS = (64, 256)  # few steps: each is another compiled function
EXTRA_MSA_STEPS = (1, 256, 1024)
TEMPLATE_ROWS = 4  # the cluster rows AlphaFold gives up to templates in models 1-2 (max_templates)


def fit_msa_caps(depth: int, max_clusters: int, max_extra: int) -> tuple[int, int]:
    """MSA caps for an MSA of `depth` rows (query included) that select exactly the rows the caps
    (max_clusters, max_extra) select, with less padding: the smallest step that still takes every row as a cluster
    centre in every model (AlphaFold's template models take TEMPLATE_ROWS fewer), and an extra-MSA step that
    holds every row left over. A deeper MSA keeps the caps; a step is never above its cap."""
    clusters = next((s for s in MSA_CLUSTER_STEPS if s - TEMPLATE_ROWS >= depth and s < max_clusters), max_clusters)
    left = max(depth - (clusters - TEMPLATE_ROWS), 0)  # the most rows any model leaves to the extra MSA
    extra = next((s for s in EXTRA_MSA_STEPS if s >= left and s < max_extra), max_extra)
    return clusters, extra


def bucket_length(length: int) -> int:
    """The padded length a sequence compiles at: at most ~12% longer, so one compile serves a range of lengths."""
    for limit, step in ((512, 32), (1024, 64), (2048, 128), (4096, 256)):
        if length <= limit:
            return -(-length // step) * step
    return -(-length // 512) * 512
