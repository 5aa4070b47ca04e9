"""Each channel for real: SNS through moto's server into SQS queues with filter policies (and e-mail/SMS
subscriptions made from preferences), Linear against a GraphQL server on a local port, and a webhook
receiver that verifies signatures and refuses a replay."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aioboto3  # type: ignore[import-untyped]  # aioboto3 ships no type information
import aiohttp
import asyncpg
import pytest

from services.notifier import handlers
from services.notifier.tests.conftest import LINEAR_KEY, WEBHOOK_SECRET, WorkerFactory
from services.notifier.tests.support import FakeLinear, WebhookReceiver, wait_for
from stamen.diagnostics.codes import Severity
from stamen.notifications.channels.webhook import PublicOnlyResolver, url_refused
from stamen.notifications.errors import PreferencesInvalid
from stamen.notifications.kinds import Kind
from stamen.notifications.messages import DiagnosisFacts, Facts, WorksetFacts
from stamen.notifications.preferences import Channel, PreferencesInput
from stamen.notifications.service import open_admin
from stamen.notifications.settings import NotifySettings
from stamen.notifications.signing import SIGNATURE_HEADER, sign


def facts(kind: Kind, tenant: str, workset_id: str, severity: Severity = Severity.INFO, **kw: Any) -> Facts:
    ws = WorksetFacts(id=workset_id, name=f"run-{workset_id[-4:]}", tenant_id=tenant, state="x", attempt=1,
                      retry_count=1, max_retries=3)  # fmt: skip
    return Facts(
        kind=kind,
        severity=severity,
        event_id=str(uuid.uuid4()),
        event_type=f"workset.{kind.value}",
        occurred_at=datetime.now(UTC),
        owner=tenant,
        region="us-west-2",
        workset=ws,
        thread=workset_id,
        **kw,
    )


OOM = DiagnosisFacts(
    code="WS-RES-001",
    name="Out-of-memory kill",
    summary="The job exceeded its memory.",
    retry_class="resource",
    attempt=1,
    evidence=["oom_kill event in step bwa_mem"],
    remediation=["Raise the memory request."],
)


async def record(pool: asyncpg.Pool, settings: NotifySettings, *found: Facts) -> None:
    async with pool.acquire() as conn:
        for f in found:
            await handlers.record(conn, f, settings=settings)


async def states(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return [r["state"] for r in await conn.fetch("SELECT state FROM notification_deliveries ORDER BY id")]


async def settled(pool: asyncpg.Pool, n: int) -> bool:
    done = [s for s in await states(pool) if s in ("delivered", "failed", "skipped")]
    return len(done) >= n


async def set_prefs(pool: asyncpg.Pool, settings: NotifySettings, owner: str, doc: dict[str, Any]) -> Any:
    async with open_admin(pool, settings) as admin:
        return await admin.set_preferences(owner, PreferencesInput.model_validate(doc), actor="test")


async def test_sns_reaches_a_queue_subscribed_with_a_filter_policy(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    moto_endpoint: str,
    running_worker: WorkerFactory,
) -> None:
    session = aioboto3.Session()
    async with (
        session.client("sns", region_name="us-west-2", endpoint_url=moto_endpoint) as sns,
        session.client("sqs", region_name="us-west-2", endpoint_url=moto_endpoint) as sqs,
    ):
        topic = await pool.fetchval("SELECT sns_topic_arn FROM customers WHERE customer_id = $1", tenant)
        queues = {}
        for name, policy in (
            ("errors", {"severity": ["error", "critical"], "tenant": [tenant]}),
            ("all", None),
        ):
            url = (await sqs.create_queue(QueueName=f"{tenant}-{name}"))["QueueUrl"]
            arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
                "QueueArn"
            ]
            attributes = {"FilterPolicy": json.dumps(policy)} if policy else {}
            await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
            queues[name] = url
        done = facts(Kind.COMPLETED, tenant, "ws-done-0001")
        failed = facts(
            Kind.FAILED,
            tenant,
            "ws-fail-0002",
            Severity.ERROR,
            diagnosis=OOM,
            detail={"reason": "retries_exhausted", "attempts": 3},
        )
        await record(pool, notify_settings, done, failed)
        async with running_worker(notify_settings, {Channel.SNS}):
            await wait_for(lambda: settled(pool, 2), what="2 SNS deliveries")
        assert await states(pool) == ["delivered", "delivered"]

        async def drain(url: str) -> list[dict[str, Any]]:
            got = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            return [json.loads(m["Body"]) for m in got.get("Messages", [])]

        [only] = await drain(
            queues["errors"]
        )  # the filter policy let the failure through, not the completion
        assert len(await drain(queues["all"])) == 2
    attrs = {k: v["Value"] for k, v in only["MessageAttributes"].items()}
    key = await pool.fetchval("SELECT idempotency_key FROM notification_deliveries WHERE kind = 'failed'")
    assert attrs == {
        "tenant": tenant,
        "workset": "ws-fail-0002",
        "event_type": "workset.failed",
        "kind": "failed",
        "severity": "error",
        "idempotency_key": key,
    }
    assert only["Subject"] == "Workset run-0002 failed for good: WS-RES-001"
    assert (
        "oom_kill event in step bwa_mem" in only["Message"] and "Raise the memory request." in only["Message"]
    )


async def test_email_and_sms_subscriptions_follow_the_preferences(
    pool: asyncpg.Pool, tenant: str, notify_settings: NotifySettings, moto_endpoint: str
) -> None:
    view = await set_prefs(
        pool, notify_settings, tenant, {"sns": {"emails": ["lab@example.org"], "sms": ["+14155550100"]}}
    )
    made = {(s.protocol, s.endpoint): s for s in view.subscriptions}
    assert made[("sms", "+14155550100")].filter_policy == {"severity": ["error", "critical"]}
    assert made[("email", "lab@example.org")].filter_policy["severity"][0] == "info"
    # moto confirms at once; on AWS an address stays pending until its owner clicks the mailed link,
    # and GET asks SNS again while any is pending.
    assert {s.status for s in view.subscriptions} == {"confirmed"}
    # What an address still pending looks like: a GET asks SNS again and records the confirmation.
    await pool.execute("UPDATE notification_subscriptions SET status = 'pending_confirmation'")
    async with open_admin(pool, notify_settings) as admin:
        assert {s.status for s in (await admin.preferences(tenant)).subscriptions} == {"confirmed"}
    assert {r["status"] for r in await pool.fetch("SELECT status FROM notification_subscriptions")} == {
        "confirmed"
    }
    session = aioboto3.Session()
    async with session.client("sns", region_name="us-west-2", endpoint_url=moto_endpoint) as sns:
        topic = view.sns_topic_arn
        listed = (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"]
        assert {(s["Protocol"], s["Endpoint"]) for s in listed} == set(made)
        # Only SMS for critical now, and no more e-mail: one subscription changed, one removed.
        view = await set_prefs(
            pool, notify_settings, tenant, {"sns": {"sms": ["+14155550100"], "sms_min_severity": "critical"}}
        )
        [sms] = view.subscriptions
        policy = (await sns.get_subscription_attributes(SubscriptionArn=sms.subscription_arn))["Attributes"][
            "FilterPolicy"
        ]
        assert json.loads(policy) == {"severity": ["critical"]}
        listed = (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"]
        assert [(s["Protocol"], s["Endpoint"]) for s in listed] == [("sms", "+14155550100")]


async def test_linear_opens_one_issue_per_workset_comments_later_events_and_closes_on_completion(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    linear: FakeLinear,
    running_worker: WorkerFactory,
) -> None:
    settings = notify_settings.model_copy(update={"linear_api_url": linear.url})
    view = await set_prefs(
        pool,
        settings,
        tenant,
        {
            "sns": {"enabled": False},
            "linear": {
                "enabled": True,
                "team_id": linear.team_id,
                "api_key": LINEAR_KEY,
                "labels": ["stamen", "no-such-label"],
            },
        },
    )
    assert view.linear_api_key_set and LINEAR_KEY not in repr(view)
    retrying = facts(
        Kind.RETRYING,
        tenant,
        "ws-lin-0001",
        Severity.WARNING,
        diagnosis=OOM,
        detail={"retry": 1, "max_retries": 3},
    )
    await record(pool, settings, retrying)
    async with running_worker(settings, {Channel.LINEAR}):
        await wait_for(lambda: settled(pool, 1), what="the issue")
        [create] = [c for c in linear.calls if c["operation"] == "StamenIssueCreate"]
        data = create["variables"]["input"]
        assert data["teamId"] == linear.team_id and data["priority"] == 3  # warning -> normal
        assert data["labelIds"] == [linear.labels["stamen"]]  # unknown labels are left out
        assert data["title"] == "[stamen] " + (
            await pool.fetchval("SELECT message->'message'->>'title' FROM notification_deliveries")
        )
        assert "WS-RES-001" in data["description"] and "Raise the memory request." in data["description"]
        assert uuid.UUID(data["id"]).version == 4 and linear.refused == []
        # The second failure of the same workset, then its completion: comments, then the issue closes.
        failed = facts(
            Kind.FAILED,
            tenant,
            "ws-lin-0001",
            Severity.ERROR,
            diagnosis=OOM,
            detail={"reason": "not_retryable", "attempts": 2},
        )
        await record(pool, settings, failed)
        await wait_for(lambda: settled(pool, 2), what="the comment")
        await record(pool, settings, facts(Kind.COMPLETED, tenant, "ws-lin-0001"))
        # Another workset's failure opens its own issue.
        await record(pool, settings, facts(Kind.RETRYING, tenant, "ws-lin-0002", Severity.WARNING))
        await wait_for(lambda: settled(pool, 4), what="completion and a second issue")
    assert len(linear.issues) == 2 and len(linear.comments) == 2
    first = linear.issues[data["id"]]
    assert first["state"] == "completed"
    bodies = [c["body"] for c in linear.comments.values()]
    assert any("failed for good" in b for b in bodies) and any("completed" in b for b in bodies)
    assert all(c["issueId"] == data["id"] for c in linear.comments.values())
    assert [c["operation"] for c in linear.calls if c["operation"] == "StamenIssueUpdate"] == [
        "StamenIssueUpdate"
    ]

    # A try that died after Linear acted is tried again: the lookup finds the issue and the comment,
    # and nothing is created twice.
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE notification_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now()"
        )
    async with running_worker(settings, {Channel.LINEAR}):
        await wait_for(lambda: settled(pool, 4), what="the repeats")
    assert len(linear.issues) == 2 and len(linear.comments) == 2
    assert await states(pool) == ["delivered"] * 4


async def test_linear_without_a_key_or_with_a_wrong_one_fails_without_retrying(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    linear: FakeLinear,
    running_worker: WorkerFactory,
) -> None:
    settings = notify_settings.model_copy(update={"linear_api_url": linear.url})
    await set_prefs(
        pool,
        settings,
        tenant,
        {
            "sns": {"enabled": False},
            "linear": {"enabled": True, "team_id": linear.team_id, "api_key": "lin_api_wrong_0000"},
        },
    )
    await record(pool, settings, facts(Kind.FAILED, tenant, "ws-key-0001", Severity.ERROR))
    async with running_worker(settings, {Channel.LINEAR}):
        await wait_for(lambda: settled(pool, 1), what="the refusal")
    row = await pool.fetchrow("SELECT state, attempts, last_error FROM notification_deliveries")
    assert row is not None
    assert (row["state"], row["attempts"]) == ("failed", 1)
    assert "authentication error" in row["last_error"] and "lin_api_wrong" not in row["last_error"]


async def test_the_webhook_is_signed_and_the_receiver_refuses_a_replay(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    receiver: WebhookReceiver,
    running_worker: WorkerFactory,
) -> None:
    view = await set_prefs(
        pool, notify_settings, tenant,
        {"sns": {"enabled": False}, "webhook": {"enabled": True, "url": receiver.url, "secret": WEBHOOK_SECRET}},
    )  # fmt: skip
    assert view.webhook_secret_set and WEBHOOK_SECRET not in repr(view)
    await record(
        pool,
        notify_settings,
        facts(
            Kind.FAILED,
            tenant,
            "ws-hook-0001",
            Severity.ERROR,
            diagnosis=OOM,
            detail={"reason": "retries_exhausted", "attempts": 4},
        ),
    )
    async with running_worker(notify_settings, {Channel.WEBHOOK}):
        await wait_for(lambda: settled(pool, 1), what="the webhook")
    [request] = receiver.requests
    key = await pool.fetchval("SELECT idempotency_key FROM notification_deliveries")
    assert receiver.effects == {key: 1} and receiver.rejected == []
    body, headers = request["body"], request["headers"]
    assert headers["Stamen-Idempotency-Key"] == key and headers["Stamen-Event-Type"] == "workset.failed"
    assert (
        body["id"] == key
        and body["kind"] == "failed"
        and body["severity"] == "error"
        and body["attempt"] == 1
    )
    assert (
        body["details"]["diagnosis"]["code"] == "WS-RES-001"
        and body["details"]["reason"] == "retries_exhausted"
    )

    # The same request again (an eavesdropper's replay) is refused, and so are an edited body and an old
    # request: none of them has an effect.
    raw = json.dumps(body, separators=(",", ":")).encode()  # the bytes the notifier signed
    same = {k: headers[k] for k in (SIGNATURE_HEADER, "Stamen-Idempotency-Key")}
    stale = {**same, SIGNATURE_HEADER: sign(WEBHOOK_SECRET, int(time.time()) - 301, raw)}
    async with aiohttp.ClientSession() as http:
        for data, sent, status in (
            (raw, same, 409),
            (raw.replace(b"error", b"info"), same, 401),
            (raw, stale, 401),
        ):
            async with http.post(receiver.url, data=data, headers=sent) as resp:
                assert resp.status == status
    assert receiver.effects == {key: 1}
    assert receiver.rejected[0] == "replayed signature" and len(receiver.rejected) == 3

    # The Slack-compatible form.
    await set_prefs(
        pool,
        notify_settings,
        tenant,
        {"sns": {"enabled": False}, "webhook": {"enabled": True, "url": receiver.url, "format": "slack"}},
    )
    await record(pool, notify_settings, facts(Kind.COMPLETED, tenant, "ws-hook-0002"))
    async with running_worker(notify_settings, {Channel.WEBHOOK}):
        await wait_for(lambda: settled(pool, 2), what="the Slack message")
    slack = receiver.requests[-1]["body"]
    assert slack["text"] == "Workset run-0002 completed" and [b["type"] for b in slack["blocks"]] == [
        "header",
        "section",
        "context",
    ]


async def test_webhooks_into_the_notifiers_own_network_are_refused(
    pool: asyncpg.Pool, tenant: str, moto_endpoint: str
) -> None:
    strict = NotifySettings(aws_endpoint_url=moto_endpoint)
    for url in (
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:10.0.0.1]/x",
        "https://localhost/x",
        "http://hooks.example.org/x",
    ):
        assert url_refused(url, allow_http=False, allow_private=False), url
    assert (
        url_refused("https://hooks.slack.com/services/T/B/x", allow_http=False, allow_private=False) is None
    )
    with pytest.raises(OSError, match="only to loopback"):
        await PublicOnlyResolver().resolve("localhost", 443)
    with pytest.raises(PreferencesInvalid) as refused:
        await set_prefs(
            pool,
            strict,
            tenant,
            {"webhook": {"enabled": True, "url": "https://10.1.2.3/hook", "secret": WEBHOOK_SECRET}},
        )
    assert [e["field"] for e in refused.value.details["errors"]] == ["webhook.url"]


async def test_a_failure_planned_after_its_workset_completed_opens_and_closes_its_issue(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    linear: FakeLinear,
    running_worker: WorkerFactory,
) -> None:
    """Two consumers plan a workset's events in either order: its completion can be sent before its
    earlier failure was even planned. The failure's issue is then opened as a record, and closed."""
    settings = notify_settings.model_copy(update={"linear_api_url": linear.url})
    await set_prefs(
        pool, settings, tenant,
        {"sns": {"enabled": False}, "linear": {"enabled": True, "team_id": linear.team_id, "api_key": LINEAR_KEY}},
    )  # fmt: skip
    failed_first = facts(Kind.RETRYING, tenant, "ws-late-0001", Severity.WARNING)
    completed = facts(Kind.COMPLETED, tenant, "ws-late-0001")
    async with running_worker(settings, {Channel.LINEAR}):
        await record(pool, settings, completed)
        await wait_for(lambda: settled(pool, 1), what="the completion")
        assert await states(pool) == ["skipped"]
        await record(pool, settings, failed_first)
        await wait_for(lambda: settled(pool, 2), what="the late failure")
    [issue] = linear.issues.values()
    assert issue["state"] == "completed" and "failed; retry" in issue["title"]
