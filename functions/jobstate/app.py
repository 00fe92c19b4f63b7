"""JobStateFunction: moves the job record along its state graph at each step of the state machine
(af2jobs.awsrun.jobstate.job_state; the event's "action" names the step)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.awsrun import jobstate
from af2jobs.awsrun.parts import aws_parts, log_keys
from af2jobs.settings import Settings

logger = Logger()
tracer = Tracer()
parts = aws_parts(Settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    logger.append_keys(action=event.get("action"), **log_keys(event))
    return jobstate.job_state(parts, event)
