"""`python -m af2jobs.batch msa|predict --job-id ID`: one stage of one job, run as an AWS Batch job that the state
machine (statemachine/prediction.asl.json) submits with batch:submitJob.sync.

    msa      (CPU queue)  the job's records through the MSA stage; each record's work dir (msas/, features.pkl)
                          to S3 jobs/<id>/work/<slug>/, its MSA to the S3 MSA cache (cache/msa/<key>/)
    predict  (GPU queue)  each record's work dir back from S3 (or, after an MSA cache hit, its MSA from the cache
                          and its features computed here), the prediction, the results to jobs/<id>/output/

Both read the job from the JobRepository and its input from the ArtifactStore (wiring.build(Settings()), AF2_MODE
aws), record themselves on the job (artifacts["aws:batch:$AWS_BATCH_JOB_ID"] = stage, what a cancel terminates),
report progress on the job record, and append to jobs/<id>/log.txt. The state machine moves the job between states;
a stage only reads the state: it runs while the job is in its state (MSA, PREDICTING) and stops when it is not.

Exit codes (the state machine reads the container's exit code from the failed job's description):
    0    the stage finished; its results are in S3
    1    the stage failed; jobs/<id>/work/.batch/<Batch job id>.json says why, and the job's error will too
    2    the command line is wrong (argparse)
    75   the prediction ran out of GPU memory (EX_TEMPFAIL of sysexits.h, "try again later": here, on a larger
         GPU). The state machine runs the prediction once more on the next larger queue (low, mid, high, p4).
         Not 137: the kernel's OOM killer and a SIGKILL after TerminateJob's grace period both exit 137 too.
    143  stopped because the job was cancelled: TerminateJob's SIGTERM (128 + 15), or the record left the
         stage's state. The orchestrator, not this program, moves the job to CANCELLED.

The tiny model (`--profile tiny`, hidden, as in `af2 serve`) is for tests and smoke checks on a CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from af2jobs.models import JobState

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_GPU_OUT_OF_MEMORY = 75
EXIT_CANCELLED = 143
# The state a job is in while each stage runs (the state machine moves it there before submitting the stage).
STAGE_STATES: dict[str, JobState] = {"msa": JobState.MSA, "predict": JobState.PREDICTING}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m af2jobs.batch",
        description="Run one stage of an af2jobs job as an AWS Batch job (AF2_MODE=aws settings).",
        epilog="Exit codes: 0 done, 1 failed, 75 GPU out of memory (retry on a larger GPU), 143 cancelled.",
    )
    p.add_argument("stage", choices=sorted(STAGE_STATES), help="msa (CPU) or predict (GPU)")
    p.add_argument("--job-id", required=True, help="the af2jobs job id (the job definition's Ref::job_id)")
    # Development and tests: the 1-block model of `af2 predict --profile tiny`.
    p.add_argument("--profile", choices=["full", "tiny"], default="full", help=argparse.SUPPRESS)
    return p


def run(argv: Sequence[str], *, stop: threading.Event, batch_job_id: str | None) -> int:
    """Run the stage the arguments name; returns the exit code. `stop` is set to stop it (SIGTERM in a container)."""
    args = parser().parse_args(list(argv))
    from af2jobs.batch.stage import BatchStage  # the pipeline (JAX) loads here, not when the codes are imported

    overrides = {"profile": "tiny"} if args.profile == "tiny" else {}
    return BatchStage.from_settings(args.stage, args.job_id, batch_job_id=batch_job_id, stop=stop,
                                    run_overrides=overrides).run()


def main(argv: Sequence[str] | None = None) -> int:
    """The container's command: JSON log lines with the job's keys, SIGTERM stops the stage, then run."""
    from aws_lambda_powertools import Logger

    args = list(sys.argv[1:] if argv is None else argv)
    parsed = parser().parse_args(args)
    batch_job_id = os.environ.get("AWS_BATCH_JOB_ID")  # Batch's own variable, not a setting
    # The "af2jobs" logger is the parent of every module's logger, so all lines carry these keys.
    Logger(service="af2jobs").append_keys(job_id=parsed.job_id, stage=parsed.stage, batch_job_id=batch_job_id)
    stop = threading.Event()
    # TerminateJob sends SIGTERM, then SIGKILL after the grace period: the stage polls `stop` to end in time.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    return run(args, stop=stop, batch_job_id=batch_job_id)


__all__ = ["EXIT_CANCELLED", "EXIT_FAILED", "EXIT_GPU_OUT_OF_MEMORY", "EXIT_OK", "STAGE_STATES", "main", "parser",
           "run"]
