"""JobStateFunction: moves the job record along its state graph at each step of the state machine
(af2jobs.stepfn.job_state; the event's "action" names the step)."""

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
    logger.append_keys(action=event.get("action"), **stepfn.log_keys(event))
    return stepfn.job_state(parts, event)
