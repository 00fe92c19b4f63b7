"""TOKEN authorizer Lambda: checks the API key with the same core code as the API (af2jobs.api.authorizer)."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from af2jobs.api.authorizer import authorize
from af2jobs.settings import Settings
from af2jobs.wiring import key_store

logger = Logger()
# Only the key table: the authorizer needs nothing else, and each cold start counts against every request.
keys = key_store(Settings())


# log_event stays off: the event is the caller's key.
@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    return authorize(event, keys)
