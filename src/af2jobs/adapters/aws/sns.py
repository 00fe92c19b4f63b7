"""The AWS Notifier: af2jobs.notification's message for each job event, published to one SNS topic; and the
owners' mail routes (SnsOwnerMail): one e-mail subscription per address, filtered to its owners.

Published with MessageStructure=json: email (and any protocol without its own entry) gets the text; sqs, lambda,
http and https subscribers get the JSON document. Message attributes `state`, `owner` and `event` let a
subscription filter, e.g. {"owner": ["alice"], "state": ["SUCCEEDED", "FAILED"]}. Download links go through the
API (af2jobs.links: it signs a fresh S3 URL on every click) and work for the signer's `seconds`; without a signer
they are presigned S3 URLs valid for LINK_SECONDS at most (less if the signing session ends first). The message
says until when.
"""

from __future__ import annotations

import json
from typing import Any

import boto3

from af2jobs import notification
from af2jobs.links import LinkSigner
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
    def __init__(self, topic_arn: str, store: ArtifactStore, client: Any = None,
                 links: LinkSigner | None = None) -> None:
        self.topic_arn = topic_arn
        self._store = store
        self._client = client if client is not None else boto3.client("sns")
        self._links = links

    def notify(self, job: Job, event: JobEvent) -> None:
        message = notification.build(job, event, self._store, link_seconds=LINK_SECONDS, signer=self._links)
        self._client.publish(
            TopicArn=self.topic_arn,
            Subject=message.subject,
            MessageStructure="json",
            Message=sns_payload(message),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in message.attributes.items()
            },
        )


def owner_filter_policy(owners: list[str]) -> dict[str, Any]:
    """The subscription filter policy (on message attributes) that admits the mail of `owners` only."""
    return {"owner": sorted(owners)}


# Mail that is nobody's job (alarms, database loads): what the operator's subscription in template.yaml admits.
OPERATOR_FILTER_POLICY = {"owner": [{"exists": False}]}
# No owner is named so (owners have no control characters): what a pending subscription left with none admits.
NOBODY_FILTER_POLICY = {"owner": ["\u0000"]}


class SnsOwnerMail:
    """OwnerMail on the topic: one e-mail subscription per address, whose filter policy lists the owners it receives
    for. SNS keeps one subscription per (topic, protocol, address), so an address shared by owners gets one policy
    naming them all. A new subscription waits until its address confirms it (SNS mails a link). A pending one is
    changed through its ARN (Subscribe with ReturnSubscriptionArn gives it back; subscribing again with other
    attributes would be refused); it cannot be removed, so one left with no owners admits nothing, and SNS
    removes it by itself after a few days unless confirmed."""

    def __init__(self, topic_arn: str, client: Any = None) -> None:
        self.topic_arn = topic_arn
        self._client = client if client is not None else boto3.client("sns")

    def _subscription(self, email: str) -> str | None:
        pages = self._client.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=self.topic_arn)
        for page in pages:
            for sub in page["Subscriptions"]:
                if sub["Protocol"] == "email" and sub["Endpoint"].lower() == email.lower():
                    return sub["SubscriptionArn"]
        return None

    def route(self, email: str, owners: list[str]) -> None:
        arn = self._subscription(email)
        if arn is not None and not arn.startswith("arn:"):  # pending: its ARN, which Subscribe gives back
            arn = self._client.subscribe(TopicArn=self.topic_arn, Protocol="email", Endpoint=email,
                                         ReturnSubscriptionArn=True)["SubscriptionArn"]
            if not owners:  # a pending subscription cannot be removed: it is made to admit nothing
                self._set_policy(arn, NOBODY_FILTER_POLICY)
                return
        if not owners:
            if arn is not None:
                self._client.unsubscribe(SubscriptionArn=arn)
            return
        if arn is not None:
            self._set_policy(arn, owner_filter_policy(owners))
            return
        self._client.subscribe(TopicArn=self.topic_arn, Protocol="email", Endpoint=email, ReturnSubscriptionArn=True,
                               Attributes={"FilterPolicy": json.dumps(owner_filter_policy(owners)),
                                           "FilterPolicyScope": "MessageAttributes"})

    def _set_policy(self, arn: str, policy: dict[str, Any]) -> None:
        self._client.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicy",
                                                 AttributeValue=json.dumps(policy))
