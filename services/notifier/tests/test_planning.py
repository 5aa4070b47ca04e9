"""Planning on the real store: the lifecycle's own events, taken from the outbox, go through the
notifier's idempotent handlers; each is planned once per channel (a redelivery changes nothing), with
its message read from PostgreSQL (diagnosis, retry timer, history); operators hear about drained
clusters, region health and dead letters piling up (once per window)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from services.notifier.app import FAMILIES
from services.notifier.handlers import consumer_handlers
from services.notifier.tests.conftest import WEBHOOK_SECRET, fast_settings
from services.notifier.tests.test_channels import set_prefs
from stamen import commands
from stamen.bus.consumer import Delivery
from stamen.diagnostics import RetryClass
from stamen.domain.lifecycle import WorksetState
from stamen.events.envelope import Envelope, decode_envelope, new_envelope
from stamen.events.types import RegionHealthChanged, WorksetCompleted, WorksetStarted
from stamen.intake import submit_workset
from stamen.notifications.kinds import OPERATORS
from stamen.notifications.settings import NotifySettings
from stamen.retry import RetryPolicy
from stamen.retry.backoff import BackoffPolicy
from stamen.retry_commands import record_failure
from stamen.store.clusters import ClusterRecord
from stamen.store.unit_of_work import UnitOfWork

S = WorksetState
DELIVERY = Delivery(subject="test", stream_seq=1, num_delivered=1, headers={})
OOM_LOG = "slurmstepd: error: Detected 1 oom_kill event in StepId=42.batch. Some of your processes may have been killed."


async def outbox_events(pool: asyncpg.Pool) -> list[Envelope]:
    return [
        decode_envelope(bytes(r["body"])) for r in await pool.fetch("SELECT body FROM outbox ORDER BY id")
    ]


async def deliver_all(
    pool: asyncpg.Pool, settings: NotifySettings, events: list[Envelope], *, enabled: bool = True
) -> None:
    """What the four durable consumers do: each event to the families that hear it, twice over (a
    redelivery), through the same inbox-claiming wrapper the service uses."""
    handlers = consumer_handlers(lambda: pool, settings, FAMILIES, enabled=enabled)
    for _ in range(2):
        for event in events:
            for durable, types in FAMILIES.items():
                if event.type in types:
                    await handlers[durable](event, DELIVERY)


async def planned(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM notification_deliveries ORDER BY id")
    return [dict(r) | {"message": json.loads(r["message"])["message"]} for r in rows]


async def fail_attempt(
    pool: asyncpg.Pool,
    workset_id: str,
    attempt: int,
    policy: RetryPolicy,
    code: str = "WS-RES-001",
    retry_class: RetryClass = RetryClass.RESOURCE,
) -> str:
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(workset_id, for_update=True)
        if ws.state is S.RETRY_WAIT:
            ws.transition(S.QUEUED, actor="timer")
        for state in (S.SCHEDULED, S.RUNNING):
            ws.transition(state, actor="scheduler")
        ws.attempt = attempt
        ws.transition(S.FAILED, actor="scheduler")
        await uow.worksets.save(ws)
        await uow.diagnoses.record(
            workset_id=ws.id, attempt=attempt, event_id=ws.correlation_id, code=code,
            retry_class=retry_class.value, retryable=retry_class.is_retryable, step="align",
            candidates=[{"code": code, "name": code, "evidence": [OOM_LOG]}], report="",
        )  # fmt: skip
        outcome = await record_failure(
            uow,
            ws.id,
            attempt=attempt,
            code=code,
            retry_class=retry_class,
            policy=policy,
            actor="scheduler",
        )
        await uow.commit()
    return outcome.action


async def test_a_workset_life_is_planned_once_per_event_and_channel_with_its_facts(
    pool: asyncpg.Pool, tenant: str, notify_settings: NotifySettings
) -> None:
    await set_prefs(
        pool,
        notify_settings,
        tenant,
        {
            "webhook": {
                "enabled": True,
                "url": "http://127.0.0.1:9/hook",
                "secret": WEBHOOK_SECRET,
                "events": ["retrying", "failed", "requeued"],
            }
        },
    )
    result = await submit_workset(
        pool, tenant_id=tenant, name="run7", spec={"name": "run7", "samples": [{"id": "s1"}]},
        region="us-west-2", source="api", actor="t",
    )  # fmt: skip
    ws_id = result.workset_id
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id, for_update=True)
        ws.transition(S.VALIDATING, actor="validator")
        ws.transition(S.QUEUED, actor="validator")  # the first queueing: told as "validated", not "requeued"
        ws.max_retries = 1
        await uow.worksets.save(ws)
        await uow.commit()
    policy = RetryPolicy(backoff=BackoffPolicy(initial_seconds=60, cap_seconds=60, jitter="none"))
    assert await fail_attempt(pool, ws_id, 1, policy) == "retry"
    assert await fail_attempt(pool, ws_id, 2, policy) == "dead_lettered"
    await commands.requeue(pool, ws_id, actor="ops@lab")
    await deliver_all(pool, notify_settings, await outbox_events(pool))

    rows = await planned(pool)
    by = {(r["kind"], r["channel"]) for r in rows}
    # submitted -> sns; retry_scheduled, dead_lettered, requeue -> sns + webhook; the retry's own
    # queueing and the first queueing are no notification of their own.
    assert sorted(by) == sorted(
        [("submitted", "sns"), ("retrying", "sns"), ("retrying", "webhook"), ("failed", "sns"),
         ("failed", "webhook"), ("requeued", "sns"), ("requeued", "webhook")]
    )  # fmt: skip
    assert len(rows) == len(by)  # delivered twice, planned once
    assert len({r["idempotency_key"] for r in rows}) == len(rows)
    retrying = next(r["message"] for r in rows if r["kind"] == "retrying")
    assert retrying["title"].startswith("Workset run7 failed; retry 1 of 1 at ")
    assert "WS-RES-001 Out-of-memory kill" in retrying["text"] and "oom_kill event" in retrying["text"]
    failed = next(r for r in rows if r["kind"] == "failed")
    assert (
        failed["severity"] == "error"
        and failed["message"]["title"] == "Workset run7 failed for good: WS-RES-001"
    )
    assert "Raise the rule's memory request" in failed["message"]["text"]  # the catalog's remediation
    requeued = next(r["message"] for r in rows if r["kind"] == "requeued")
    assert requeued["title"] == "Workset run7 requeued by ops@lab (attempt 3 next)"


async def test_only_final_failures_and_disabled_notifications_plan_nothing_extra(
    pool: asyncpg.Pool, tenant: str, notify_settings: NotifySettings
) -> None:
    await set_prefs(pool, notify_settings, tenant, {"only_final_failures": True})
    result = await submit_workset(
        pool, tenant_id=tenant, name="w", spec={}, region="us-west-2", source="api", actor="t"
    )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(result.workset_id, for_update=True)
        for state in (S.VALIDATING, S.QUEUED):
            ws.transition(state, actor="t")
        await uow.worksets.save(ws)
        await uow.commit()
    policy = RetryPolicy(backoff=BackoffPolicy(initial_seconds=60, cap_seconds=60, jitter="none"))
    assert await fail_attempt(pool, result.workset_id, 1, policy) == "retry"
    # A failure no retry can fix ends at once, in the dead-letter queue: failed for good.
    corrupt = await submit_workset(
        pool, tenant_id=tenant, name="bad-fastq", spec={}, region="us-west-2", source="api", actor="t"
    )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(corrupt.workset_id, for_update=True)
        for state in (S.VALIDATING, S.QUEUED):
            ws.transition(state, actor="t")
        await uow.worksets.save(ws)
        await uow.commit()
    assert (
        await fail_attempt(pool, corrupt.workset_id, 1, policy, "WS-DAT-002", RetryClass.DATA)
        == "dead_lettered"
    )
    events = await outbox_events(pool)
    await deliver_all(pool, notify_settings, events, enabled=False)
    assert await planned(pool) == []
    await pool.execute("DELETE FROM inbox")
    await deliver_all(pool, notify_settings, events)
    rows = await planned(pool)
    assert [r["kind"] for r in rows] == ["submitted", "submitted", "failed"]  # no "retrying"
    failed = rows[-1]["message"]
    assert failed["title"] == "Workset bad-fastq failed for good: WS-DAT-002"
    assert "the failure is not one a retry can fix" in failed["text"]
    assert "FASTQ sequence/quality length mismatch" in failed["text"]


async def test_operators_hear_of_drained_clusters_region_health_and_piling_dead_letters(
    pool: asyncpg.Pool, moto_endpoint: str
) -> None:
    settings = fast_settings(moto_endpoint, dlq_alert_threshold=2, dlq_alert_window_minutes=60)
    await set_prefs(
        pool,
        settings,
        OPERATORS,
        {"webhook": {"enabled": True, "url": "http://127.0.0.1:9/ops", "secret": WEBHOOK_SECRET}},
    )
    async with UnitOfWork(pool) as uow:
        await uow.clusters.upsert_cluster(ClusterRecord("hpc-west", "us-west-2", "local", 2))
        await uow.commit()
    await commands.set_cluster_status(pool, "hpc-west", "draining", actor="ops@lab")
    await commands.set_cluster_status(
        pool, "hpc-west", "draining", actor="ops@lab"
    )  # already draining: no event
    policy = RetryPolicy(backoff=BackoffPolicy(initial_seconds=60, cap_seconds=60, jitter="none"))
    for i in range(3):
        result = await submit_workset(
            pool, tenant_id="acme", name=f"w{i}", spec={}, region="us-west-2", source="api", actor="t"
        )
        async with UnitOfWork(pool) as uow:
            ws = await uow.worksets.get(result.workset_id, for_update=True)
            for state in (S.VALIDATING, S.QUEUED):
                ws.transition(state, actor="t")
            ws.max_retries = 0
            await uow.worksets.save(ws)
            await uow.commit()
        assert await fail_attempt(pool, result.workset_id, 1, policy) == "dead_lettered"
    events = await outbox_events(pool)
    events.append(
        new_envelope(
            RegionHealthChanged(status="down", detail="no answer from squeue"),
            tenant_id="_platform",
            region="eu-central-1",
        )
    )
    await deliver_all(pool, settings, events)
    ops = [r for r in await planned(pool) if r["owner"] == OPERATORS]
    titles = sorted(r["message"]["title"] for r in ops)
    # Three dead letters, over the threshold of 2 from the first event on, in one window: one alert
    # (it counts what is parked when the alert is made).
    assert titles == sorted(
        [
            "Cluster hpc-west drained by ops@lab",
            "Region eu-central-1 is down",
            "3 worksets dead-lettered in the last 60 min",
        ]
    )
    region = next(r for r in ops if r["kind"] == "region_health")
    assert region["severity"] == "critical" and region["channel"] == "webhook"


async def test_events_of_a_gone_workset_or_too_old_are_not_announced(
    pool: asyncpg.Pool, tenant: str, notify_settings: NotifySettings
) -> None:
    ghost = new_envelope(
        WorksetStarted(cluster="local"), tenant_id=tenant, region="us-west-2", workset_id="ws-gone"
    )
    old = new_envelope(WorksetCompleted(), tenant_id=tenant, region="us-west-2", workset_id="ws-gone")
    old = old.model_copy(update={"occurred_at": old.occurred_at.replace(year=2020)})
    await deliver_all(pool, notify_settings, [ghost, old])
    assert await planned(pool) == []
