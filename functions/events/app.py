"""BatchEventsFunction: EventBridge "Batch Job State Change" of this stack's queues onto the job record
(af2jobs.awsrun.events.record_batch_event)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs import wiring
from af2jobs.awsrun import events
from af2jobs.settings import Settings

logger = Logger()
tracer = Tracer()
# Only the job records: this function may read and update them, nothing else.
repo = wiring.build(Settings()).repo


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    logger.append_keys(**events.batch_event_keys(event))
    return events.record_batch_event(repo, event)
