"""NotifyFunction: the job's success or failure to SNS, with presigned links (af2jobs.stepfn.notify)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs import stepfn
from af2jobs.settings import Settings

logger = Logger()
tracer = Tracer()
parts = stepfn.aws_parts(Settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    logger.append_keys(**stepfn.log_keys(event))
    return stepfn.notify(parts, event)
