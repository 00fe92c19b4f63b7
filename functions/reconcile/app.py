"""ReconcileFunction: a state machine execution that ended FAILED, TIMED_OUT or ABORTED ends its job, if nothing
else did (af2jobs.awsrun.reconcile.reconcile)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.awsrun import reconcile
from af2jobs.awsrun.parts import aws_parts
from af2jobs.settings import Settings

logger = Logger()
tracer = Tracer()
parts = aws_parts(Settings())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    logger.append_keys(job_id=(event.get("detail") or {}).get("name"))
    return reconcile.reconcile(parts.repo, parts.notifier, event)
