"""API Lambda: API Gateway REST proxy events -> the job API's Router (af2jobs.api.routes)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.api.app import create_lambda_resolver
from af2jobs.settings import Settings
from af2jobs.wiring import build

logger = Logger()
tracer = Tracer()
# Built once per cold start; a missing setting fails here, naming the variable.
resolver = create_lambda_resolver(build(Settings()))


# log_event stays off: the event carries the caller's Authorization header.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def handler(event: dict, context: LambdaContext) -> dict:
    return resolver.resolve(event, context)
