"""The AWS Notifier: af2jobs.notification's message for each job event, published to one SNS topic.

Published with MessageStructure=json: email (and any protocol without its own entry) gets the text; sqs, lambda,
http and https subscribers get the JSON document. Message attributes `state`, `owner` and `event` let a
subscription filter, e.g. {"owner": ["alice"], "state": ["SUCCEEDED", "FAILED"]}. Download links are presigned
URLs valid for LINK_SECONDS; the message says until when.
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from af2jobs import notification
from af2jobs.models import Job, JobEvent
from af2jobs.notification import Notification
from af2jobs.ports import ArtifactStore

# SNS takes at most 256 KiB per message (all protocol variants together); links are what grows, so they go first.
MAX_MESSAGE_BYTES = 250_000
LINK_SECONDS = 24 * 3600
_MACHINE_PROTOCOLS = ("sqs", "lambda", "http", "https")


def sns_payload(message: Notification) -> str:
    """The MessageStructure=json body, with links dropped (the CLI line remains) if it would exceed SNS's limit."""
    document = json.dumps(message.data)
    body = json.dumps({"default": message.text, **{p: document for p in _MACHINE_PROTOCOLS}})
    if len(body.encode()) <= MAX_MESSAGE_BYTES:
        return body
    lean = {**message.data, "artifacts": {}, "links": [], "links_expire_at": None}
    text = message.text.split("Download links", 1)[0] + f"Download all files: {message.data['download']}\n"
    return json.dumps({"default": text, **{p: json.dumps(lean) for p in _MACHINE_PROTOCOLS}})


class SnsNotifier:
    def __init__(self, topic_arn: str, store: ArtifactStore, client: Any = None) -> None:
        self.topic_arn = topic_arn
        self._store = store
        self._client = client if client is not None else boto3.client("sns")

    def notify(self, job: Job, event: JobEvent) -> None:
        message = notification.build(job, event, self._store, link_seconds=LINK_SECONDS)
        self._client.publish(
            TopicArn=self.topic_arn,
            Subject=message.subject,
            MessageStructure="json",
            Message=sns_payload(message),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in message.attributes.items()
            },
        )
