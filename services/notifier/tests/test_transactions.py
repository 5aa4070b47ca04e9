"""What planning costs in PostgreSQL transactions, counted from the client side (see
services/scheduler/tests/test_transactions.py), through the service's own wiring (init_app): the four
consumers' calls that arrive together share one transaction (group commit), where each used to take
one of its own, and the deliveries planned are the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from services.notifier.app import FAMILIES, init_app
from services.notifier.handlers import consumer_handlers
from services.notifier.tests.conftest import WEBHOOK_SECRET
from services.notifier.tests.support import add_customer
from services.notifier.tests.test_channels import set_prefs
from services.notifier.tests.test_planning import DELIVERY, outbox_events, planned
from stamen.bus.consumer import ConsumerSpec
from stamen.bus.subjects import event_filter
from stamen.domain.lifecycle import WorksetState as S
from stamen.events.envelope import Envelope
from stamen.events.types import WorksetCompleted, WorksetStarted
from stamen.intake import submit_workset
from stamen.notifications.settings import NotifySettings
from stamen.service.keys import CONSUMER_SPECS, POOL
from stamen.settings import Settings
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork
from tests.transactions import TransactionCounter


async def a_life(pool: asyncpg.Pool, tenant: str, name: str) -> None:
    """submitted, validated, queued, started, completed: the outbox holds its events."""
    result = await submit_workset(
        pool, tenant_id=tenant, name=name, spec={"name": name, "samples": [{"id": "s1"}]},
        region="us-west-2", source="api", actor="t",
    )  # fmt: skip
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(result.workset_id, for_update=True)
        ws.transition(S.VALIDATING, actor="validator")
        ws.transition(S.QUEUED, actor="validator")
        ws.transition(S.SCHEDULED, actor="scheduler")
        ws.transition(S.RUNNING, actor="scheduler", event=WorksetStarted(cluster="local"))
        ws.transition(S.COMPLETED, actor="scheduler", event=WorksetCompleted())
        await uow.worksets.save(ws)
        await uow.commit()


def hears(spec: ConsumerSpec, event: Envelope) -> bool:
    return event_filter(event.type) in spec.filter_subjects


@asynccontextmanager
async def counted_notifier(
    database_url: str, notify_settings: NotifySettings, events: list[Envelope]
) -> AsyncIterator[tuple[list[tuple[ConsumerSpec, Envelope]], TransactionCounter]]:
    """The notifier's consumers on a pool whose transactions are counted, with each (consumer, event)
    pair that consumer hears."""
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        app = init_app(Settings(), notify_settings)
        app[POOL] = counting
        yield [(spec, e) for e in events for spec in app[CONSUMER_SPECS] if hears(spec, e)], counter
    finally:
        await counting.close()


async def test_events_consumed_together_share_a_transaction(
    pool: asyncpg.Pool, database_url: str, tenant: str, notify_settings: NotifySettings
) -> None:
    for i in range(4):
        await a_life(pool, tenant, f"run{i}")
    events = await outbox_events(pool)
    async with counted_notifier(database_url, notify_settings, events) as (calls, counter):
        assert len(calls) == 12  # submitted, started, completed of four worksets

        async def deliver_all() -> None:
            await asyncio.gather(*(spec.handler(e, DELIVERY) for spec, e in calls))

        await deliver_all()
        consumed = await counter.count()
        first = await planned(pool)
        await deliver_all()  # every one redelivered
        redelivered = await counter.count() - consumed
    # Twelve calls, one transaction (each call took one of its own before: 12), after the screen's read, a
    # statement of its own before it.
    assert consumed == 2, [t[:2] for t in counter.transactions]
    assert counter.transactions[0][0].startswith("SELECT o.owner, p.preferences")
    assert redelivered == 2
    # One delivery per event (the tenant's default: its SNS topic), as one call per transaction planned.
    assert sorted((r["kind"], r["workset_id"]) for r in first) == sorted(
        (e.type.removeprefix("workset."), e.workset_id) for e in events
    )
    assert await planned(pool) == first  # the redeliveries planned nothing more


async def test_an_event_no_channel_hears_of_is_one_read_and_keeps_nothing(
    pool: asyncpg.Pool, database_url: str, notify_settings: NotifySettings
) -> None:
    """A tenant whose channels hear of nothing (a customer with no SNS topic, no other channel): its
    events, consumed together, cost one read (of its preferences and topic) and leave no inbox claim,
    no facts read, no delivery. Nothing was kept of that handling, so an event redelivered after the tenant turned a
    channel on is planned: a subscription never misses an event it was there for."""
    tenant = f"lab-{uuid.uuid4().hex[:8]}"
    await add_customer(pool, tenant, None)
    for i in range(2):
        await a_life(pool, tenant, f"quiet{i}")
    events = await outbox_events(pool)
    async with counted_notifier(database_url, notify_settings, events) as (calls, counter):
        assert len(calls) == 6  # submitted, started, completed of two worksets
        await asyncio.gather(*(spec.handler(e, DELIVERY) for spec, e in calls))
        await counter.count()
    # One statement (a group), no BEGIN or COMMIT around it: the tenant's preferences and topic, read once
    # for all six.
    assert len(counter.sent) == 1 and counter.sent[0].startswith("SELECT o.owner, p.preferences"), (
        counter.sent
    )
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer LIKE 'notifier-%'") == 0
    assert await planned(pool) == []

    await set_prefs(pool, notify_settings, tenant, {"webhook": {
        "enabled": True, "url": "http://127.0.0.1:9/hook", "secret": WEBHOOK_SECRET,
    }})  # fmt: skip
    handlers = consumer_handlers(lambda: pool, notify_settings, FAMILIES, enabled=True)
    for spec, event in calls:  # each one's ack was lost: delivered again
        await handlers[spec.durable](event, DELIVERY)
    assert sorted((r["kind"], r["channel"], r["workset_id"]) for r in await planned(pool)) == sorted(
        (e.type.removeprefix("workset."), "webhook", e.workset_id) for e in events
    )


async def test_a_group_of_two_tenants_tells_only_the_one_that_listens_and_only_its_own_topic(
    pool: asyncpg.Pool, database_url: str, tenant: str, notify_settings: NotifySettings
) -> None:
    """The screen reads each event's own tenant: a quiet tenant's events in the same group as a heard
    one's are neither planned nor sent to the heard tenant's topic."""
    quiet = f"lab-{uuid.uuid4().hex[:8]}"
    await add_customer(pool, quiet, None)
    await a_life(pool, tenant, "heard")
    await a_life(pool, quiet, "quiet")
    events = await outbox_events(pool)
    topic = await pool.fetchval("SELECT sns_topic_arn FROM customers WHERE customer_id = $1", tenant)
    async with counted_notifier(database_url, notify_settings, events) as (calls, _):
        assert {e.tenant_id for _, e in calls} == {tenant, quiet}
        await asyncio.gather(*(spec.handler(e, DELIVERY) for spec, e in calls))
    heard = [e for e in events if e.tenant_id == tenant and any(e is c for _, c in calls)]
    assert len(heard) == 3  # submitted, started, completed
    rows = await planned(pool)
    assert sorted((r["owner"], r["channel"], r["recipient"], r["workset_id"]) for r in rows) == sorted(
        (tenant, "sns", topic, e.workset_id) for e in heard
    )
