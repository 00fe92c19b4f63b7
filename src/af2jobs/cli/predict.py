"""`af2 predict INPUT.fasta --out DIR`: a local prediction, end to end."""

from __future__ import annotations

import argparse
from datetime import date
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from af2jobs import msafile
from af2jobs.errors import ValidationError
from af2jobs.fasta import complex_record, parse_fasta
from af2jobs.request import DB_PRESETS, MSA_MODES, MODEL_PRESETS, RELAX
from af2jobs.runconfig import MODEL_NAMES
from af2jobs.settings import Settings, apply_device_memory

MAX_INPUT_BYTES = 10 << 20  # far above any FASTA of sequences within the length limit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict structures for a FASTA file on this machine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("input", nargs="?", type=Path, help="FASTA file (several records: each is its own prediction; "
                                                         "with --model-preset multimer, one complex)")
    src.add_argument("--example", choices=["ubiquitin", "yeast_ubiquitin"],
                     help="predict a bundled example instead of a file (yeast_ubiquitin has a template in the demo "
                          "database: human ubiquitin, 1UBQ)")
    p.add_argument("--out", type=Path, required=True, help="output directory (one subdirectory per record)")
    p.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated subset of model_1..model_5")
    p.add_argument("--strategy", default="all", help="all | best | stop-at-score:X (default: all)")
    p.add_argument("--recycles", type=int, help="recycling iterations (default: AF2_NUM_RECYCLE or 3)")
    p.add_argument("--max-msa", help="MSA depth caps CLUSTERS:EXTRA (default 512:5120 on a GPU, 64:128 on a CPU)")
    p.add_argument("--profile", choices=["full", "tiny"], default="full",
                   help="'tiny' runs a 1-block model for smoke tests; default: the published architecture")
    p.add_argument("--db-root", type=Path, help="database root (default: AF2_DB_ROOT or DATA_DIR/databases)")
    p.add_argument("--params-dir", type=Path, help="directory with official params_model_*.npz")
    p.add_argument("--seed", type=int, default=0, help="random seed of the model")
    p.add_argument("--db-preset", type=str.lower, choices=DB_PRESETS,
                   help="full_dbs (default): BFD + UniRef30 by HHblits; reduced_dbs: small BFD by jackhmmer")
    p.add_argument("--msa-mode", type=str.lower, choices=MSA_MODES,
                   help="jackhmmer (default): AlphaFold's searches; mmseqs2: MMseqs2, as ColabFold searches")
    p.add_argument("--model-preset", type=str.lower, choices=MODEL_PRESETS,
                   help="monomer_ptm (default) | monomer | monomer_casp14 (8 ensembles) | multimer (the records are "
                        "the chains of one complex: AlphaFold-Multimer v3)")
    p.add_argument("--num-multimer-predictions-per-model", type=int, metavar="N",
                   help="with --model-preset multimer: seeds per model (default 5: 25 predictions)")
    p.add_argument("--name", help="with --model-preset multimer: the complex's name (default: the input file's)")
    p.add_argument("--models-to-relax", type=str.lower, choices=RELAX,
                   help="Amber relaxation: best (default, the top-ranked model) | all | none")
    p.add_argument("--max-template-date", type=_iso_date, metavar="YYYY-MM-DD",
                   help="use only templates released by this date (default: no limit; jobs submitted through the "
                        "API default to the original platform's 2020-05-14)")
    p.add_argument("--msa", action="append", default=[], metavar="[NAME=]FILE",
                   help="your own MSA (A3M or Stockholm, the query first) for a record: its search is skipped; "
                        "repeat with NAME=FILE for several records")
    p.add_argument("--gpus", type=int, help="devices to use: with --strategy all, models run on separate GPUs in "
                                            "parallel (default 1)")
    p.set_defaults(func=run)


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _read_input(args) -> bytes:
    if args.example:
        return resources.files("af2jobs.examples").joinpath(f"{args.example}.fasta").read_bytes()
    path: Path = args.input
    if not path.is_file():
        raise ValidationError(f"input file {path} does not exist or is not a file", field="input")
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise ValidationError(f"input file {path} is {path.stat().st_size:,} bytes; the limit is "
                              f"{MAX_INPUT_BYTES:,}", field="input")
    return path.read_bytes()


def _supplied_msas(values: list[str], records) -> dict[str, tuple[str, bytes]]:
    """--msa files, each checked against its record: record name -> (format, text)."""
    by_name = {r.name: r for r in records}
    out = {}
    for name, path in msafile.assign(values, list(by_name)).items():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValidationError(f"--msa {path}: not UTF-8 text", field="msa") from None
        msa = msafile.check(text, by_name[name].sequence, name)
        out[name] = (msa.format, msa.text.encode())
    return out


def _name(text: str) -> str:
    """A complex's name as a record name: the header's rules (no spaces), from the file name or --name."""
    import re

    cleaned = re.sub(r"\s+", "_", text.strip()) or "complex"
    return cleaned[:100]


def _caps(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    try:
        clusters, extra = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValidationError(f"--max-msa must look like 512:5120, not {text!r}", field="max_msa") from None
    return clusters, extra


def _run_config(args, settings: Settings):
    from pydantic import ValidationError as PydanticError

    from af2jobs.pipeline.run import resolve_run_config

    clusters, extra = _caps(args.max_msa)
    try:
        return resolve_run_config(settings, model_names=args.models, strategy=args.strategy,
                                  num_recycle=args.recycles, max_msa_clusters=clusters, max_extra_msa=extra,
                                  profile=args.profile, random_seed=args.seed, gpus=args.gpus,
                                  db_preset=args.db_preset, model_preset=args.model_preset,
                                  msa_mode=args.msa_mode,
                                  models_to_relax=args.models_to_relax, max_template_date=args.max_template_date,
                                  num_multimer_predictions_per_model=args.num_multimer_predictions_per_model)
    except PydanticError as exc:
        err = exc.errors()[0]
        raise ValidationError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", field=str(err["loc"][0])) from None


def run(args) -> int:
    overrides = {k: v for k, v in {"db_root": args.db_root, "params_dir": args.params_dir}.items() if v}
    settings = Settings(**overrides)
    apply_device_memory(settings)
    # Validate everything before any work or any file: bad input leaves nothing behind.
    records = parse_fasta(_read_input(args), max_length=settings.max_length)
    run_config = _run_config(args, settings)
    if run_config.multimer:
        if args.msa:
            raise ValidationError("--msa applies to monomer records: a complex is searched chain by chain",
                                  field="msa")
        name = args.name or (args.example or args.input.stem)
        records = [complex_record(records, _name(name), settings.max_length)]
    elif args.num_multimer_predictions_per_model is not None:
        raise ValidationError("--num-multimer-predictions-per-model applies to --model-preset multimer only",
                              field="num_multimer_predictions_per_model")
    supplied = _supplied_msas(args.msa, records)

    from af2jobs.cli.progress import StageReporter
    from af2jobs.pipeline.run import Context, predict_records

    console = Console() if Console().is_terminal else Console(width=200)
    with StageReporter() as reporter:
        ctx = Context(settings=settings, run=run_config, progress=reporter, supplied_msas=supplied)
        results = predict_records(records, args.out, ctx)
    _summary(console, results, run_config)
    return 0


def _summary(console: Console, results, run_config) -> None:
    kind = "complex" if run_config.multimer else "monomer prediction(s)"
    table = Table(title=f"af2 predict: {len(results)} {kind}, strategy {run_config.strategy}")
    for col in ("record", "length", "best model", "mean pLDDT", "pTM", "MSA", "templates", "relaxed", "compile s",
                "predict s", "total s", "output"):
        table.add_column(col)
    for r in results:
        msa = r.timings["msa"]
        hits = sum(s["hits"] for s in msa["searches"])
        models = r.timings["predict"]["models"]
        used = r.timings.get("templates", {}).get("used", [])
        relaxed = [m for m, info in r.timings.get("relax", {}).get("models", {}).items() if info.get("error") is None]
        table.add_row(
            r.record.name, str(len(r.record.sequence)), r.best["model"], f"{r.best['mean_plddt']:.1f}",
            ("-" if r.best["ptm"] is None else f"{r.best['ptm']:.3f}")
            + (f" (ipTM {r.best['iptm']:.3f})" if r.best.get("iptm") is not None else ""),
            f"{hits} hits ({msa['cache']})", ", ".join(used[:2]) + (f" +{len(used) - 2}" if len(used) > 2 else "")
            or "none", ", ".join(relaxed) or "none", f"{sum(m['compile_s'] for m in models):.1f}",
            f"{sum(m['run_s'] for m in models):.1f}", f"{r.timings['total_s']:.1f}", str(r.out_dir),
        )
    console.print(table)
    if any(r.untrained for r in results):
        console.print("[bold yellow]UNTRAINED PARAMETERS[/]: no official params_model_*.npz were found, so the "
                      "model ran on deterministic random weights of the official shapes. The structures and "
                      "scores above carry no biological meaning. Put the official parameters in "
                      "AF2_PARAMS_DIR for real predictions.")
