"""Adapters for running on AWS: DynamoDB records and keys, S3 artifacts, Step Functions + Batch, SNS."""

from af2jobs.adapters.aws.apikeys import DynamoApiKeyStore
from af2jobs.adapters.aws.dynamodb import DynamoJobRepository
from af2jobs.adapters.aws.logs import CloudWatchJobLogs
from af2jobs.adapters.aws.s3 import S3ArtifactStore
from af2jobs.adapters.aws.sns import SnsNotifier
from af2jobs.adapters.aws.stepfunctions import StepFunctionsOrchestrator

__all__ = [
    "CloudWatchJobLogs",
    "DynamoApiKeyStore",
    "DynamoJobRepository",
    "S3ArtifactStore",
    "SnsNotifier",
    "StepFunctionsOrchestrator",
]
