"""QueueDepthFunction: every minute, the Batch queues' jobs per status as the QueueDepth metric (EMF log lines;
af2jobs.adapters.aws.queuedepth). The schedule's input is {"queues": {name: queue ARN}}."""

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.adapters.aws.cloudwatch import EmfMetrics
from af2jobs.adapters.aws.queuedepth import publish_queue_depth

logger = Logger()
batch = boto3.client("batch")
metrics = EmfMetrics()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: LambdaContext) -> dict:
    return publish_queue_depth(batch, metrics, event.get("queues") or {})
