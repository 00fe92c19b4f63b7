"""NotifyFunction: the job's success or failure to SNS, with presigned links (af2jobs.awsrun.notify.notify)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.awsrun import notify
from af2jobs.awsrun.parts import aws_parts, log_keys
from af2jobs.settings import Settings

logger = Logger()
tracer = Tracer()
parts = aws_parts(Settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    logger.append_keys(**log_keys(event))
    return notify.notify(parts, event)
