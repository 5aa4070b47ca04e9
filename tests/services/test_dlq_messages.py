"""Parked messages (the STAMEN_DLQ stream): a message whose handler kept failing is parked by the real
forwarder, listed, replayed to its consumer only and handled once; the reconciler replays what is safe,
resolves what has nothing left to do and leaves the unreadable for an operator; the CLI shows the same."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from nats.js import JetStreamContext

from services.diagnostics.handlers import diagnose_failure
from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer
from stamen.bus.deadletter import DeadLetterForwarder
from stamen.bus.parked import ParkedMessages
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import DLQ_STREAM, dlq_subject, event_filter
from stamen.dlq_messages import (
    DlqMessageNotFound,
    DlqMessageNotReplayable,
    list_messages,
    reconcile_messages,
    replay_message,
    show_message,
)
from stamen.events import Envelope
from stamen.events.envelope import new_envelope
from stamen.events.types import WorksetFailed
from stamen.intake import submit_workset
from stamen.service.idempotent import idempotent
from stamen.store.db import create_pool
from tests.transactions import TransactionCounter
from tests.waiting import eventually

CONSUMER = "diagnostics-failed"
pytestmark = pytest.mark.slow


async def a_workset(pool: asyncpg.Pool, name: str) -> str:
    result = await submit_workset(pool, tenant_id="acme", name=name, spec={"samples": []}, region="us-west-2",
                                  source="api", actor="test")  # fmt: skip
    return result.workset_id


def failed(workset_id: str) -> Envelope:
    return new_envelope(WorksetFailed(attempt=1, reason="step qc: exit 1"), tenant_id="acme", region="us-west-2",
                        workset_id=workset_id)  # fmt: skip


async def diagnoses(pool: asyncpg.Pool, workset_id: str) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM diagnoses WHERE workset_id = $1", workset_id))


async def test_a_parked_message_is_listed_and_replayed_to_success(
    pool: asyncpg.Pool, js: JetStreamContext, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    broken = {"on": True}
    handled: list[tuple[str, str]] = []
    inner = idempotent(CONSUMER, lambda: pool, diagnose_failure)

    async def handler(event: Envelope, delivery: Delivery) -> None:
        if broken["on"]:
            raise RuntimeError("a bug in this version of the handler")
        await inner(event, delivery)
        handled.append((event.workset_id or "", delivery.headers.get("Stamen-Replay-For", "")))

    async def other(event: Envelope, delivery: Delivery) -> None:  # subscribed to the same events
        handled.append(("other-consumer", event.workset_id or ""))

    publisher = JetStreamPublisher(js)
    specs = [
        ConsumerSpec(CONSUMER, [event_filter("workset.failed")], handler, max_deliver=2, error_delays=(0.1,)),
        ConsumerSpec("audit", [event_filter("workset.failed")], other, deliver_new_only=True),
    ]
    consumers = [DurableConsumer(js, spec, publisher) for spec in specs]
    forwarder = DeadLetterForwarder(js, publisher, CONSUMER)
    for part in [*consumers, forwarder]:
        await part.start()
    try:
        ws = await a_workset(pool, "parked")
        event = failed(ws)
        await publisher.publish(event)

        async def parked() -> bool:
            return (await js.stream_info(DLQ_STREAM)).state.messages == 1

        await eventually(parked, 20, "the message parked after max_deliver")
        (listed,) = await list_messages(js, pool)
        assert listed["reason"] == "max_deliver" and listed["consumer"] == CONSUMER
        assert listed["event_id"] == str(event.id) and listed["workset_id"] == ws and listed["replayable"]
        shown = await show_message(js, pool, listed["seq"])
        assert shown["workset_state"] == "submitted" and json.loads(shown["body"])["id"] == str(event.id)

        # The CLI lists the same (with --json), over the same NATS and PostgreSQL.
        env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database_url}
        out = subprocess.run([sys.executable, "-m", "stamen", "dlq", "messages", "ls", "--json"], env=env,
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        assert [r["seq"] for r in json.loads(out.stdout)] == [listed["seq"]]

        broken["on"] = False  # the bug is fixed
        handled.clear()
        result = await replay_message(js, pool, listed["seq"], actor="ops@lab")
        assert result.replayed and result.consumer == CONSUMER and result.event_id == str(event.id)

        async def diagnosed() -> bool:
            return await diagnoses(pool, ws) == 1

        await eventually(diagnosed, 20, "the replayed message handled")
        await asyncio.sleep(0.5)  # give the other consumer time to (wrongly) handle it
        assert handled == [(ws, CONSUMER)]  # its consumer only, once
        assert await list_messages(js, pool) == []
        with pytest.raises(DlqMessageNotFound):
            await replay_message(js, pool, listed["seq"], actor="ops@lab")
        async with pool.acquire() as conn:
            action = await conn.fetchrow("SELECT action, actor, event_id FROM dlq_message_actions")
        assert dict(action) == {"action": "replayed", "actor": "ops@lab", "event_id": str(event.id)}
    finally:
        for part in consumers:
            await part.stop(2)
        await forwarder.stop()


async def test_the_reconciler_replays_resolves_or_leaves(pool: asyncpg.Pool, js: JetStreamContext) -> None:
    """Parked by hand, as the forwarder and the consumer park them; no consumer runs, so what the
    reconciler sends back stays on the events stream to be looked at."""
    parked = ParkedMessages(js)

    async def park(reason: str, body: bytes, seq: int) -> None:
        headers = {"Nats-Msg-Id": f"dlq-{CONSUMER}-{seq}", "Stamen-Dlq-Reason": reason, "Stamen-Dlq-Consumer": CONSUMER,
                   "Stamen-Original-Subject": "stamen.evt.acme.workset.failed", "Stamen-Dlq-Stream-Seq": str(seq)}  # fmt: skip
        await JetStreamPublisher(js).publish_raw(dlq_subject(reason, CONSUMER), body, headers)

    alive, gone, done = await a_workset(pool, "alive"), "ws-deleted", await a_workset(pool, "done")
    done_event = failed(done)
    await idempotent(CONSUMER, lambda: pool, diagnose_failure)(done_event, Delivery("s", 1, 1, {}))
    alive_event = failed(alive)
    await park("max_deliver", alive_event.to_json(), 1)
    await park("max_deliver", failed(gone).to_json(), 2)
    await park("max_deliver", done_event.to_json(), 3)
    await park("malformed", b'{"type": "workset.failed", "workset_id": null}', 4)

    counts = await reconcile_messages(js, pool, [CONSUMER], actor="test", after_seconds=0, max_replays=1)
    assert counts == {"replay": 1, "resolve": 2, "leave": 1}
    left = await parked.list()
    assert [m.reason for m in left] == ["malformed"]
    with pytest.raises(DlqMessageNotReplayable):
        await replay_message(js, pool, left[0].seq, actor="ops")
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT workset_id, action FROM dlq_message_actions ORDER BY dlq_seq")
    assert [(r["workset_id"], r["action"]) for r in rows] == [(alive, "replayed"), (gone, "resolved"),
                                                              (done, "resolved")]  # fmt: skip
    # Parked again after its replay (its handler still fails): at most `max_replays` automatic replays.
    await park("max_deliver", alive_event.to_json(), 5)
    counts = await reconcile_messages(js, pool, [CONSUMER], actor="test", after_seconds=0, max_replays=1)
    assert counts == {"replay": 0, "resolve": 0, "leave": 2}
    assert sorted(m.reason for m in await parked.list()) == ["malformed", "max_deliver"]


async def test_the_reconcile_pass_over_no_parked_messages_costs_no_transaction(
    js: JetStreamContext, database_url: str
) -> None:
    """Every service with consumers runs this pass each reconcile interval, for each of its consumers:
    with nothing parked (nearly always) it asks NATS and nothing of PostgreSQL."""
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        start = await counter.count()
        counts = await reconcile_messages(
            js, counting, [CONSUMER], actor="test", after_seconds=0, max_replays=1
        )
        assert await counter.count() - start == 0, counter.transactions[start:]
    finally:
        await counting.close()
    assert sum(counts.values()) == 0
