"""Delivery under faults: a channel answering 500s and timing out is retried (capped, jittered) until it
recovers and then delivers each notification exactly once, while the other channel goes on; a
budget used up leaves a failed delivery an operator sees and resends; rate limits space sends."""

from __future__ import annotations

import itertools
import json

import aioboto3  # type: ignore[import-untyped]  # aioboto3 ships no type information
import asyncpg

from services.notifier.tests.conftest import WEBHOOK_SECRET, WorkerFactory, fast_settings
from services.notifier.tests.support import WebhookReceiver, wait_for
from services.notifier.tests.test_channels import facts, record, set_prefs, settled, states
from stamen.diagnostics.codes import Severity
from stamen.notifications.errors import DeliveryNotResendable
from stamen.notifications.kinds import Kind
from stamen.notifications.service import open_admin
from stamen.notifications.settings import NotifySettings


async def outbox_types(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT body FROM outbox ORDER BY id")
    return [json.loads(bytes(r["body"]))["type"] for r in rows]


async def test_a_failing_webhook_recovers_and_delivers_once_while_sns_is_not_held_up(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    receiver: WebhookReceiver,
    moto_endpoint: str,
    running_worker: WorkerFactory,
) -> None:
    await set_prefs(
        pool,
        notify_settings,
        tenant,
        {"webhook": {"enabled": True, "url": receiver.url, "secret": WEBHOOK_SECRET}},
    )
    receiver.faults = [500, "timeout", 503, 502, "timeout"]
    session = aioboto3.Session()
    async with (
        session.client("sqs", region_name="us-west-2", endpoint_url=moto_endpoint) as sqs,
        session.client("sns", region_name="us-west-2", endpoint_url=moto_endpoint) as sns,
    ):
        url = (await sqs.create_queue(QueueName=f"{tenant}-count"))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
            "QueueArn"
        ]
        topic = await pool.fetchval("SELECT sns_topic_arn FROM customers WHERE customer_id = $1", tenant)
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        await record(
            pool, notify_settings, *(facts(Kind.COMPLETED, tenant, f"ws-fault-000{i}") for i in range(3))
        )
        async with running_worker(notify_settings):
            await wait_for(lambda: settled(pool, 6), timeout=30, what="3 SNS and 3 webhook deliveries")
        received = []
        while got := (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)).get("Messages"):
            received += [json.loads(m["Body"])["MessageAttributes"]["idempotency_key"]["Value"] for m in got]
            await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in got],
            )
    rows = await pool.fetch("SELECT * FROM notification_deliveries ORDER BY id")
    sns_rows = [r for r in rows if r["channel"] == "sns"]
    hook_rows = [r for r in rows if r["channel"] == "webhook"]
    assert {r["state"] for r in rows} == {"delivered"}
    # SNS was done before the webhook's first success: the webhook's trouble did not hold it up.
    assert max(r["delivered_at"] for r in sns_rows) < min(r["delivered_at"] for r in hook_rows)
    # SNS is at least once: a publish that timed out here may still have reached the topic, so a key may
    # arrive twice, but only for a delivery that was retried, and every key arrives.
    assert set(received) == {r["idempotency_key"] for r in sns_rows}
    first_try = [r["idempotency_key"] for r in sns_rows if r["attempts"] == 1]
    assert all(received.count(key) == 1 for key in first_try), received
    # Five faults spread over the webhook's deliveries; each delivery's effect happened exactly once.
    assert sum(r["attempts"] for r in hook_rows) == 3 + 5 and receiver.faults == []
    assert receiver.effects == {r["idempotency_key"]: 1 for r in hook_rows}
    assert any("timed out" in (r["last_error"] or "") for r in hook_rows)
    assert any("HTTP 5" in (r["last_error"] or "") for r in hook_rows)
    assert (await outbox_types(pool)).count("notification.sent") == 6


async def test_a_used_up_budget_is_a_failed_delivery_that_an_operator_resends(
    pool: asyncpg.Pool,
    tenant: str,
    moto_endpoint: str,
    receiver: WebhookReceiver,
    running_worker: WorkerFactory,
) -> None:
    settings = fast_settings(moto_endpoint, max_attempts=3)
    await set_prefs(
        pool,
        settings,
        tenant,
        {
            "sns": {"enabled": False},
            "webhook": {"enabled": True, "url": receiver.url, "secret": WEBHOOK_SECRET},
        },
    )
    receiver.faults = [500, 500, 500]
    await record(pool, settings, facts(Kind.FAILED, tenant, "ws-budget-01", Severity.ERROR))
    async with running_worker(settings):
        await wait_for(lambda: settled(pool, 1), what="the first to fail")
        receiver.faults = [404]  # refused outright: not retried
        await record(pool, settings, facts(Kind.CANCELLED, tenant, "ws-budget-02", Severity.WARNING))
        await wait_for(lambda: settled(pool, 2), what="the second to fail")
        assert await states(pool) == ["failed", "failed"]
        rows = await pool.fetch("SELECT * FROM notification_deliveries ORDER BY id")
        assert [r["attempts"] for r in rows] == [3, 1]
        assert "3 attempts failed" in rows[0]["last_error"] and "not retryable" in rows[1]["last_error"]
        assert receiver.effects == {}
        async with open_admin(pool, settings) as admin:
            failed = await admin.deliveries(owner=tenant, state="failed")
            assert [r.id for r in failed] == [rows[1]["id"], rows[0]["id"]]
            resent = await admin.resend(rows[0]["id"], actor="ops")
            assert (resent.state, resent.attempts, resent.resent_by) == ("pending", 0, "ops")

            async def redelivered() -> bool:
                return await states(pool) == ["delivered", "failed"]

            await wait_for(redelivered, what="the resend")
            try:
                await admin.resend(rows[0]["id"], actor="ops")
            except DeliveryNotResendable as exc:
                assert exc.code == "NOTIFICATION_NOT_RESENDABLE"
            else:
                raise AssertionError("a delivered notification was resent")
    assert receiver.effects == {rows[0]["idempotency_key"]: 1}  # same key as the failed tries
    assert (await outbox_types(pool)).count("notification.failed") == 2


async def test_a_slack_webhook_gets_at_most_its_published_rate(
    pool: asyncpg.Pool,
    tenant: str,
    moto_endpoint: str,
    receiver: WebhookReceiver,
    running_worker: WorkerFactory,
) -> None:
    settings = fast_settings(moto_endpoint, slack_per_second=4.0, slack_burst=1)
    await set_prefs(
        pool,
        settings,
        tenant,
        {
            "sns": {"enabled": False},
            "webhook": {"enabled": True, "url": receiver.url, "format": "slack", "secret": WEBHOOK_SECRET},
        },
    )
    await record(pool, settings, *(facts(Kind.STARTED, tenant, f"ws-rate-000{i}") for i in range(4)))
    async with running_worker(settings):
        await wait_for(lambda: settled(pool, 4), what="4 Slack messages")
    arrivals = [r["at"] for r in receiver.requests]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # 4 per second with a burst of 1: starts 0.25 s apart (back to back they would be milliseconds apart).
    assert len(arrivals) == 4 and all(g >= 0.15 for g in gaps), gaps


async def test_a_digest_window_goes_out_as_one_message_under_one_key(
    pool: asyncpg.Pool,
    tenant: str,
    notify_settings: NotifySettings,
    receiver: WebhookReceiver,
    running_worker: WorkerFactory,
) -> None:
    await set_prefs(
        pool,
        notify_settings,
        tenant,
        {
            "sns": {"enabled": False},
            "webhook": {"enabled": True, "url": receiver.url, "secret": WEBHOOK_SECRET},
            "digest": {"enabled": True, "interval_minutes": 60},
        },
    )
    await record(pool, notify_settings, *(facts(Kind.STARTED, tenant, f"ws-digest-0{i}") for i in range(3)))
    await record(pool, notify_settings, facts(Kind.FAILED, tenant, "ws-digest-09", Severity.ERROR))
    due = await pool.fetch(
        "SELECT kind, digest, next_attempt_at > created_at AS later FROM notification_deliveries ORDER BY id"
    )
    assert [(r["kind"], r["digest"], r["later"]) for r in due] == [("started", True, True)] * 3 + [
        ("failed", False, False)
    ]
    async with running_worker(notify_settings):
        await wait_for(lambda: settled(pool, 1), what="the error, at once")
        receiver.faults = [503]  # the digest's first try fails: its retry sends the same batch, same key
        await pool.execute(
            "UPDATE notification_deliveries SET next_attempt_at = now() WHERE digest"
        )  # the window ends
        await wait_for(lambda: settled(pool, 4), what="the digest")
    rows = await pool.fetch("SELECT * FROM notification_deliveries WHERE digest ORDER BY id")
    assert {r["state"] for r in rows} == {"delivered"} and len({r["batch_key"] for r in rows}) == 1
    assert [r["attempts"] for r in rows] == [2, 2, 2]
    digests = [r for r in receiver.requests if r["body"]["title"].startswith("3 stamen notifications")]
    assert len(digests) == 2  # the failed try and its retry
    assert digests[0]["body"]["id"] == digests[1]["body"]["id"] == rows[0]["batch_key"]
    titles = [json.loads(r["message"])["message"]["title"] for r in rows]
    assert [d["title"] for d in digests[1]["body"]["details"]["digest"]] == titles
    assert receiver.effects[rows[0]["batch_key"]] == 1 and len(receiver.effects) == 2
