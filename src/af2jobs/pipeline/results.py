"""What a prediction hands on: one model's run (ModelRun) and the ranked runs of a record (Prediction)."""

from __future__ import annotations

from dataclasses import dataclass, field

from af2jobs.pipeline import params as params_mod


@dataclass(eq=False)
class ModelRun:
    model: str  # the prediction's name: model_1, or model_1_multimer_v3_pred_0 for a complex
    phase: str  # "screen" (no recycling) | "full"
    recycles: int
    params_s: float  # loading (or generating, the first time) the parameters
    compile_s: float
    run_s: float
    ranking_confidence: float
    mean_plddt: float
    ptm: float | None
    params: params_mod.ParamsIdentity
    result: dict = field(repr=False)
    # The recycling state after the last iteration (on the device), so a screen can go on as the full run.
    state: dict | None = field(default=None, repr=False)
    device: str = ""
    base_model: str = ""  # model_1 ... model_5 (the request's name of the model)
    seed_index: int = 0  # which of the model's predictions (a complex's seeds)
    seed: int = 0  # the random seed it ran with
    iptm: float | None = None  # a complex's interface pTM

    def summary(self) -> dict:
        out = {
            "model": self.model, "phase": self.phase, "recycles": self.recycles, "device": self.device,
            "params_s": round(self.params_s, 3), "compile_s": round(self.compile_s, 3), "run_s": round(self.run_s, 3),
            "ranking_confidence": round(self.ranking_confidence, 4), "mean_plddt": round(self.mean_plddt, 4),
            "ptm": None if self.ptm is None else round(self.ptm, 4), "params": self.params.source,
        }
        if self.iptm is not None:
            out.update(iptm=round(self.iptm, 4), seed=self.seed)
        return out


@dataclass
class Prediction:
    ranked: list[ModelRun]  # best first: the models run with full recycling
    runs: list[ModelRun]  # every run in order, screens included
    features: dict  # processed features of the ranked models' configuration
    strategy: str
    config_fingerprint: str
    msa_caps: tuple[int, int] = (0, 0)  # the cluster and extra-MSA rows it ran with (RunConfig.fitted_to)
