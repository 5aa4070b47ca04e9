"""What the delivery worker costs in PostgreSQL round trips, beside what it does: a loop that claimed
something claims again, and one that is full waits for a send to end, without asking when the next
delivery is due; a rate bucket already made is taken with its read and its write."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from services.notifier.tests.conftest import fast_settings
from services.notifier.tests.support import wait_for
from services.notifier.worker import DeliveryWorker
from stamen.notifications.channels.base import Outgoing, RateGate, Sent
from stamen.notifications.preferences import Channel
from stamen.notifications.ratelimits import RateLimit
from stamen.notifications.repository import NewDelivery, NotificationRepository
from stamen.store.db import create_pool
from tests.transactions import TransactionCounter

MESSAGE: dict[str, object] = {
    "kind": "started", "severity": "info", "title": "", "text": "t", "markdown": "t", "sms": "t",
    "thread": None, "opens_thread": False, "resolves_thread": False, "data": {}, "links": {},
}  # fmt: skip


class Instant:
    """A channel that takes every message at once."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, out: Outgoing, gate: RateGate) -> Sent:
        self.sent.append(out.idempotency_key)
        return Sent(reference=f"ref-{len(self.sent)}")


def due(owner: str, i: int) -> NewDelivery:
    return NewDelivery(
        event_id=uuid.uuid4(), event_type="workset.started", kind="started", owner=owner,
        workset_id=None, occurred_at=datetime.now(UTC), thread=None, channel=Channel.SNS.value,
        recipient=f"arn:aws:sns:us-west-2:000000000000:{owner}-{i}", idempotency_key=f"{owner}-{i}",
        severity="info", message={"message": MESSAGE | {"title": f"n{i}"}, "options": {}},
        next_attempt_at=datetime.now(UTC), digest=False,
    )  # fmt: skip


async def test_a_loop_asks_when_the_next_is_due_only_with_room_and_nothing_due(
    pool: asyncpg.Pool, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = f"lab-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await NotificationRepository(conn).add([due(owner, i) for i in range(6)])
    asked: list[datetime | None] = []
    real_next_due = NotificationRepository.next_due

    async def counted(self: NotificationRepository) -> datetime | None:
        asked.append(await real_next_due(self))
        return asked[-1]

    monkeypatch.setattr(NotificationRepository, "next_due", counted)
    channel = Instant()
    settings = fast_settings(moto_endpoint, channel_concurrency=1, poll_seconds=30)
    worker = DeliveryWorker(pool, {Channel.SNS: channel}, settings, region="us-west-2")
    await worker.start()
    try:
        await wait_for(lambda: len(channel.sent) == 6, what="six sends")
        await wait_for(lambda: len(asked) >= 1, what="the idle loop's question")
    finally:
        await worker.stop(2)
    # Six claims of one, each made while the one before was in flight or just ended: no question;
    # then the claim that found nothing asks when to wake (was: one question per turn, 7 or more).
    assert len(asked) <= 2, asked
    states = await pool.fetch("SELECT state FROM notification_deliveries WHERE owner = $1", owner)
    assert [r["state"] for r in states] == ["delivered"] * 6


async def test_a_known_bucket_is_taken_with_its_read_and_its_write(database_url: str) -> None:
    counter = TransactionCounter()
    pool = await create_pool(database_url, init=counter.init)
    key, limit = f"test:{uuid.uuid4().hex}", RateLimit(per_second=0.001, burst=2)
    waits: list[float] = []
    try:
        for _ in range(3):
            async with pool.acquire() as conn, conn.transaction():
                waits.append(await NotificationRepository(conn).take_tokens(key, limit))
        await counter.count()
    finally:
        await pool.close()
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # a burst of two, then a long wait
    made, *taken = [t for t in counter.transactions if any("notification_rate_buckets" in s for s in t)]
    assert any(s.startswith("INSERT INTO notification_rate_buckets") for s in made)
    for statements in taken:  # was three: an INSERT ... ON CONFLICT DO NOTHING first, every time
        assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE"], statements


async def test_a_worker_whose_listening_connection_was_dropped_listens_again_and_is_woken(
    pool: asyncpg.Pool, moto_endpoint: str
) -> None:
    """PostgreSQL restarted, or dropped the listener's session: the worker listens again on a new
    connection, so a delivery added afterwards is sent at once, not after the 30 s safety-net poll."""
    owner = f"lab-{uuid.uuid4().hex[:8]}"
    channel = Instant()
    settings = fast_settings(moto_endpoint, channel_concurrency=1, poll_seconds=30)
    worker = DeliveryWorker(pool, {Channel.SNS: channel}, settings, region="us-west-2")
    await worker.start()
    try:
        await asyncio.sleep(0.5)  # the loop found nothing and sleeps: until a NOTIFY, or 30 s
        listening = worker._listen
        assert listening is not None
        pid = listening.get_server_pid()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            listeners = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> $1"
            await wait_for(lambda: conn.fetchval(listeners, pid), timeout=10, what="a new LISTEN")
        async with pool.acquire() as conn:
            await NotificationRepository(conn).add([due(owner, 1)])
        await wait_for(lambda: channel.sent == [f"{owner}-1"], timeout=10, what="the send after the NOTIFY")
    finally:
        await worker.stop(2)
