"""SNS: publish to the owner's topic with filterable message attributes; manage e-mail and SMS
subscriptions made from preferences.

One publish per notification carries three bodies (MessageStructure=json): `default` (SQS, HTTP and
other subscribers), `email` (the full text) and `sms` (one short line). E-mail and SMS subscribers get
a filter policy on the `severity` attribute; lab systems subscribe their own queues with any policy
on `tenant`, `workset`, `event_type`, `kind` or `severity`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from stamen.notifications.channels.base import Outgoing, RateGate, SendError, Sent
from stamen.notifications.delivery import SendFailure

SUBJECT_LENGTH = 100
# AWS error codes worth another try; the rest (NotFound, AuthorizationError, InvalidParameter, ...)
# would be refused again.
_RETRYABLE = {"Throttling", "ThrottlingException", "InternalError", "InternalFailure", "ServiceUnavailable",
              "KMSThrottling", "RequestTimeout"}  # fmt: skip


def subject(title: str) -> str:
    """SNS subjects: printable ASCII, no line breaks, at most 100 characters."""
    ascii_only = "".join(c if 32 <= ord(c) < 127 else "?" for c in title.replace("\n", " "))
    return ascii_only[:SUBJECT_LENGTH] or "stamen notification"


def attributes(out: Outgoing) -> dict[str, dict[str, str]]:
    values = {
        "tenant": out.owner,
        "event_type": out.event_type,
        "kind": out.message.kind.value,
        "severity": out.message.severity.value,
        "idempotency_key": out.idempotency_key,
    }
    if out.workset_id:
        values["workset"] = out.workset_id
    return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}


class SnsChannel:
    def __init__(self, client: Any) -> None:
        self._client = client

    async def send(self, out: Outgoing, gate: RateGate) -> Sent:
        await gate("sns", f"sns:{out.recipient}")
        bodies = {"default": out.message.text, "email": out.message.text, "sms": out.message.sms}
        try:
            answer = await self._client.publish(
                TopicArn=out.recipient,
                Subject=subject(out.message.title),
                Message=json.dumps(bodies),
                MessageStructure="json",
                MessageAttributes=attributes(out),
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            raise SendError(SendFailure(f"SNS {code}", retryable=code in _RETRYABLE)) from None
        except BotoCoreError as exc:  # endpoint unreachable, read timeout
            raise SendError(SendFailure(f"SNS unreachable: {type(exc).__name__}", retryable=True)) from None
        return Sent(str(answer["MessageId"]))


# --- subscriptions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WantedSubscription:
    protocol: str  # email | sms
    endpoint: str
    filter_policy: dict[str, Any]


@dataclass(frozen=True)
class MadeSubscription:
    protocol: str
    endpoint: str
    subscription_arn: str
    status: str  # pending_confirmation | confirmed
    filter_policy: dict[str, Any]


class SubscriptionRefused(Exception):
    """SNS refused an endpoint (e.g. a phone number it does not take)."""

    def __init__(self, protocol: str, endpoint: str, reason: str) -> None:
        super().__init__(f"SNS refused the {protocol} subscription of {endpoint}: {reason}")
        self.protocol = protocol
        self.endpoint = endpoint


async def subscribe(client: Any, topic_arn: str, wanted: WantedSubscription) -> MadeSubscription:
    """Subscribe (idempotent in SNS); an e-mail address stays pending until its owner confirms the
    message AWS sends it. ReturnSubscriptionArn gives the ARN even while it is pending."""
    policy = json.dumps(wanted.filter_policy)
    try:
        answer = await client.subscribe(
            TopicArn=topic_arn,
            Protocol=wanted.protocol,
            Endpoint=wanted.endpoint,
            Attributes={"FilterPolicy": policy, "FilterPolicyScope": "MessageAttributes"},
            ReturnSubscriptionArn=True,
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "InvalidParameter":
            raise SubscriptionRefused(
                wanted.protocol, wanted.endpoint, exc.response["Error"].get("Message", code)
            ) from None
        raise
    arn = str(answer["SubscriptionArn"])
    return MadeSubscription(
        wanted.protocol, wanted.endpoint, arn, await status(client, arn), wanted.filter_policy
    )


async def set_filter_policy(client: Any, subscription_arn: str, policy: dict[str, Any]) -> None:
    await client.set_subscription_attributes(
        SubscriptionArn=subscription_arn, AttributeName="FilterPolicy", AttributeValue=json.dumps(policy)
    )


async def status(client: Any, subscription_arn: str) -> str:
    try:
        answer = await client.get_subscription_attributes(SubscriptionArn=subscription_arn)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotFound":
            return "pending_confirmation"
        raise
    pending = str(answer.get("Attributes", {}).get("PendingConfirmation", "false")).lower() == "true"
    return "pending_confirmation" if pending else "confirmed"


async def unsubscribe(client: Any, subscription_arn: str) -> None:
    try:
        await client.unsubscribe(SubscriptionArn=subscription_arn)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NotFound", "InvalidParameter"):
            raise
