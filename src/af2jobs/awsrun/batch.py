"""`python -m af2jobs.awsrun.batch msa|predict --job-id ID`: one stage of one job, run as an AWS Batch job that the
state machine (statemachine/prediction.asl.json) submits with batch:submitJob.sync. What the stages do:
af2jobs.awsrun.stage; their exit codes: af2jobs.awsrun.contract.

The tiny model (`--profile tiny`, hidden, as in `af2 serve`) is for tests and smoke checks on a CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from af2jobs.awsrun.contract import STAGE_STATES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m af2jobs.awsrun.batch",
        description="Run one stage of an af2jobs job as an AWS Batch job (AF2_MODE=aws settings).",
        epilog="Exit codes: 0 done, 1 failed, 75 GPU out of memory (retry on a larger GPU), 143 cancelled.",
    )
    p.add_argument("stage", choices=sorted(STAGE_STATES), help="msa (CPU) or predict (GPU)")
    p.add_argument("--job-id", required=True, help="the af2jobs job id (the job definition's Ref::job_id)")
    # Development and tests: the 1-block model of `af2 predict --profile tiny`.
    p.add_argument("--profile", choices=["full", "tiny"], default="full", help=argparse.SUPPRESS)
    return p


def run(argv: Sequence[str], *, stop: threading.Event, batch_job_id: str | None) -> int:
    """Run the stage the arguments name with the AWS adapters that Settings (AF2_MODE=aws) names; returns the exit
    code. `stop` is set to stop it (SIGTERM in a container)."""
    args = parser().parse_args(list(argv))
    from af2jobs import errors, wiring
    from af2jobs.adapters.aws.cloudwatch import PutMetricData
    from af2jobs.adapters.aws.workarea import S3MsaCache, S3Objects, S3WorkArea
    from af2jobs.awsrun.stage import BatchStage
    from af2jobs.jobrun import PipelineStages
    from af2jobs.settings import Settings

    settings = Settings()
    if settings.mode != "aws":
        raise errors.ConfigurationError("python -m af2jobs.awsrun.batch runs on AWS Batch: it needs AF2_MODE=aws")
    services = wiring.build(settings)
    objects = S3Objects(settings.bucket)
    stages = PipelineStages(settings, {"profile": "tiny"} if args.profile == "tiny" else {})
    return BatchStage(args.stage, args.job_id, settings=settings, repo=services.repo, store=services.store,
                      work=S3WorkArea(objects), msa_cache=S3MsaCache(objects), stages=stages,
                      batch_job_id=batch_job_id, stop=stop, metrics=PutMetricData()).run()


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


if __name__ == "__main__":
    raise SystemExit(main())
