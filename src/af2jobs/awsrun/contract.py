"""What the state machine (statemachine/prediction.asl.json) and the Batch stages agree on: the stages, the state a
job is in while each runs, and the exit codes a stage's container ends with (the definition reads them from the
failed job's description).

    0    the stage finished; its results are in S3
    1    the stage failed; jobs/<id>/work/.batch/<Batch job id>.json says why, and the job's error will too
    2    the command line is wrong (argparse)
    75   the prediction ran out of GPU memory (EX_TEMPFAIL of sysexits.h, "try again later": here, on a larger
         GPU). The state machine runs the prediction once more on the next larger queue (low, mid, high, p4).
         Not 137: the kernel's OOM killer and a SIGKILL after TerminateJob's grace period both exit 137 too.
    143  stopped because the job was cancelled: TerminateJob's SIGTERM (128 + 15), or the record left the
         stage's state. The orchestrator, not the stage, moves the job to CANCELLED.
"""

from __future__ import annotations

from af2jobs.models import JobState

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_GPU_OUT_OF_MEMORY = 75
EXIT_CANCELLED = 143
# The state a job is in while each stage runs (the state machine moves it there before submitting the stage).
STAGE_STATES: dict[str, JobState] = {"msa": JobState.MSA, "predict": JobState.PREDICTING}
# The error type a job records when its prediction ran out of GPU memory on the largest queue (or again).
GPU_OUT_OF_MEMORY = "GpuOutOfMemory"

__all__ = ["EXIT_CANCELLED", "EXIT_FAILED", "EXIT_GPU_OUT_OF_MEMORY", "EXIT_OK", "EXIT_USAGE", "GPU_OUT_OF_MEMORY",
           "STAGE_STATES"]
