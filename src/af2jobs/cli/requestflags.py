"""The request's command-line flags, one table for `af2 submit` (a job through the API) and `af2 predict` (the same
request run on this machine): the same flag means the same request field with the same default (JobRequest's),
and an error names the flag the user typed.

    add(parser, command)   the table's flags for "submit" or "predict"
    fields(args)           the flags given, as request fields (None left out: the request's default)
    flag_of(field)         the flag of a request field, to name it in an error
    parse(body)            JobRequest.parse, its error naming the flag
    job_name(path)         a job name from a file name
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from af2jobs.errors import ValidationError
from af2jobs.request import DB_PRESETS, MODEL_NAMES, MODEL_PRESETS, MSA_MODES, PRESETS, QUEUES, RELAX, JobRequest

BOTH = ("submit", "predict")

# (request field, flags, the commands that take it, argparse keywords). --msa is each command's own (submit may
# upload it, predict reads it), but it fills the same field.
TABLE: list[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, Any]]] = [
    ("fasta", ("--name",), BOTH,
     {"help": "job name; with --model-preset multimer, the complex's name (default: from the file name)"}),
    ("model_names", ("--models",), BOTH,
     {"help": f"comma-separated subset of {','.join(MODEL_NAMES)} (default: all)"}),
    ("strategy", ("--strategy",), BOTH, {"help": "all | best | stop-at-score:X (default: all)"}),
    ("preset", ("--preset",), BOTH,
     {"type": str.lower, "choices": list(PRESETS), "help": "the 2021 spelling: full | reduced | casp14 "
                                                           "(default: full)"}),
    ("db_preset", ("--db-preset",), BOTH,
     {"type": str.lower, "choices": DB_PRESETS,
      "help": "full_dbs (default): BFD + UniRef30 by HHblits; reduced_dbs: small BFD by jackhmmer"}),
    ("msa_mode", ("--msa-mode",), BOTH,
     {"type": str.lower, "choices": MSA_MODES,
      "help": "jackhmmer (default): AlphaFold's searches; mmseqs2: MMseqs2, as ColabFold searches"}),
    ("model_preset", ("--model-preset",), BOTH,
     {"type": str.lower, "choices": MODEL_PRESETS,
      "help": "monomer_ptm (default) | monomer | monomer_casp14 (8 ensembles) | multimer (the FASTA's records are "
              "the chains of one complex: AlphaFold-Multimer v3)"}),
    ("num_multimer_predictions_per_model", ("--num-multimer-predictions-per-model",), BOTH,
     {"type": int, "metavar": "N", "help": "with --model-preset multimer: seeds per model (default 5: 25 "
                                           "predictions)"}),
    ("models_to_relax", ("--models-to-relax",), BOTH,
     {"type": str.lower, "choices": RELAX, "help": "Amber relaxation: best (default, the top-ranked model) | all "
                                                   "| none"}),
    ("max_template_date", ("--max-template-date",), BOTH,
     {"metavar": "YYYY-MM-DD", "help": "use only templates released by this date (default: 2020-05-14, the "
                                       "original platform's)"}),
    ("gpu", ("--gpu", "--gpus"), BOTH,
     {"type": int, "help": "GPUs, 1-8 (default 1); with --strategy all, models run on separate GPUs in parallel"}),
    ("que", ("--que",), ("submit",), {"choices": QUEUES, "help": "queue (default: auto, by sequence length)"}),
    ("comment", ("--comment",), ("submit",), {"help": "free text kept with the job"}),
]


def _dest(name: str) -> str:
    return f"request_{name}"  # apart from the commands' own arguments (submit's positional `fasta`)


def add(parser: argparse.ArgumentParser, command: str) -> None:
    for name, flags, commands, kwargs in TABLE:
        if command in commands:
            if "choices" not in kwargs:
                kwargs = {"metavar": flags[0].lstrip("-").upper().replace("-", "_"), **kwargs}
            parser.add_argument(*flags, dest=_dest(name), **kwargs)


def fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the flags give (those not given are left to the request's defaults)."""
    out = {name: getattr(args, _dest(name), None) for name, *_ in TABLE}
    if out["model_names"]:
        out["model_names"] = out["model_names"].split(",")
    return {k: v for k, v in out.items() if v is not None}


def flag_of(field: str | None) -> str | None:
    """The flag of a request field (its first part, for a field path such as msa.a): None for no flag."""
    head = (field or "").split(".")[0]
    if head in ("msa", "msa_file_names"):
        return "--msa"
    return next((flags[0] for name, flags, *_ in TABLE if name == head), None)


def parse(body: dict[str, Any], names: dict[str, str] | None = None) -> JobRequest:
    """The request of `body`, checked by the one schema; an error starts with the flag (or, from `names`, the
    argument) of the field it is about."""
    try:
        return JobRequest.parse(body)
    except ValidationError as exc:
        field = (exc.field or "").split(".")[0]
        flag = (names or {}).get(field) or flag_of(exc.field)
        raise ValidationError(f"{flag}: {exc.message}" if flag else exc.message, field=exc.field) from None


def job_name(path: Path) -> str:
    """A valid job name from a file name: 'my seq (1).fa' -> 'my_seq__1_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip("._-")[:100]
    return name or "job"


__all__ = ["TABLE", "add", "fields", "flag_of", "job_name", "parse"]
