"""ValidateFunction: the state machine's first task. Re-validates the job, plans its run (af2jobs.awsrun.validate.validate)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.awsrun import validate
from af2jobs.awsrun.parts import aws_parts, log_keys
from af2jobs.settings import Settings

logger = Logger()
tracer = Tracer()
# Built once per cold start; a missing setting fails here, naming the variable.
parts = aws_parts(Settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    logger.append_keys(**log_keys(event))
    return validate.validate(parts, event)
