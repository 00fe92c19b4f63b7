"""Runs jobs on AWS: the state machine's tasks and the Batch stages, on the core's lifecycle (af2jobs.lifecycle)
and stages (af2jobs.jobrun). The AWS services themselves are reached through af2jobs.adapters.aws.

    statemachine/prediction.asl.json     the workflow: Validate -> RunMsa (Batch, CPU) -> RunPrediction (Batch,
                                         GPU) -> MarkSucceeded -> Notify, Catch -> MarkFailed -> Notify
    validate.py     ValidateFunction: QUEUED -> VALIDATING, the request checked again, the run planned
    jobstate.py     JobStateFunction: the job record's move at each later step, the measured cost at the end
    failures.py     reading a failed Batch job out of a Catch's Cause, into the job's error
    notify.py       NotifyFunction: the job's outcome through the Notifier (SNS)
    events.py       BatchEventsFunction: EventBridge "Batch Job State Change" onto the job record
    batch.py        `python -m af2jobs.awsrun.batch msa|predict --job-id ID`: the Batch containers' command
    stage.py        one Batch stage of one job (BatchStage), on af2jobs.jobrun's record-by-record stages
    msacache.py     the Batch stages' side of the MSA cache shared through S3
    usage.py        the container's CPU and memory as metrics while a stage runs
    contract.py     what the state machine and the stages agree on: stage names, their states, exit codes
    errors.py       the errors the state machine matches by name
    parts.py        what the tasks are given (TaskParts) and how it is built on AWS

The Lambda functions (functions/*/app.py) are thin handlers over validate, jobstate, notify and events; they run
from the core layer, without JAX: only stage.py's stages load the pipeline, and only when they run.
"""
