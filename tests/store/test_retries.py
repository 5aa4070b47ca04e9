"""The retry commands and the store's retry queries on a real PostgreSQL: record_failure, get_retryable_worksets,
reset_for_retry (a retry timer) and requeue_with_fresh_budget (an operator's requeue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from stamen.diagnostics import RetryClass
from stamen.domain.lifecycle import WorksetState
from stamen.retry import BackoffPolicy, MemoryEscalation, RequeueChanges, RetryPolicy
from stamen.retry_commands import (
    WorksetNotRequeueable,
    record_failure,
    requeue_with_fresh_budget,
    reset_for_retry,
)
from stamen.store.unit_of_work import UnitOfWork
from tests.store.worksetkit import TO_DEAD_LETTERED, TO_FAILED, events_of, workset_in

S = WorksetState
POLICY = RetryPolicy(
    backoff=BackoffPolicy(initial_seconds=10, factor=2, cap_seconds=40),
    memory=MemoryEscalation(growth=1.5, max_multiplier=4),
)


async def record(
    pool: asyncpg.Pool,
    ws_id: str,
    retry_class: RetryClass,
    *,
    attempt: int = 1,
    policy: RetryPolicy | None = POLICY,
) -> str:
    async with UnitOfWork(pool) as uow:
        outcome = await record_failure(
            uow,
            ws_id,
            attempt=attempt,
            code="WS-TST-001",
            retry_class=retry_class,
            policy=policy,
            actor="tester",
        )
        await uow.commit()
    return outcome.action


async def test_a_transient_failure_waits_for_a_durable_timer_within_the_backoff(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=1, max_retries=3)
    before = datetime.now(UTC)
    assert await record(pool, ws_id, RetryClass.TRANSIENT) == "retry"
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        timers = await uow.timers.timers_for(ws_id)
        history = await uow.worksets.history(ws_id)
    assert ws.state is S.RETRY_WAIT and ws.retry_count == 1 and ws.memory_multiplier == 1.0
    assert [(t["kind"], t["payload"], t["fired_at"]) for t in timers] == [("retry", '{"attempt": 2}', None)]
    # First retry: full jitter within [0, initial_seconds].
    assert before - timedelta(seconds=1) <= timers[0]["due_at"] <= before + timedelta(seconds=11)
    assert history[-1].actor == "tester" and "WS-TST-001 is transient: retry 1/3" in history[-1].reason
    scheduled = [e for e in await events_of(pool, ws_id) if e["type"] == "workset.retry_scheduled"]
    assert len(scheduled) == 1 and scheduled[0]["payload"]["attempt"] == 2


async def test_a_resource_failure_retries_with_more_memory_never_less(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=1)
    assert await record(pool, ws_id, RetryClass.RESOURCE) == "retry"
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(ws_id)).memory_multiplier == 1.5
    # A later transient failure keeps the memory the workset already needed.
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id, for_update=True)
        for state in (S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED):
            ws.transition(state, actor="t")
        ws.attempt = 2
        await uow.worksets.save(ws)
        await uow.commit()
    assert await record(pool, ws_id, RetryClass.TRANSIENT, attempt=2) == "retry"
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
    assert ws.memory_multiplier == 1.5 and ws.retry_count == 2


async def dead_letter_events(pool: asyncpg.Pool, ws_id: str) -> list[dict[str, object]]:
    return [e["payload"] for e in await events_of(pool, ws_id) if e["type"] == "workset.dead_lettered"]


@pytest.mark.parametrize("retry_class", [RetryClass.DATA, RetryClass.CONFIGURATION, RetryClass.PERMANENT])
async def test_a_failure_that_cannot_change_ends_in_the_dead_letter_queue_at_once(
    pool: asyncpg.Pool, retry_class: RetryClass
) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=1)
    assert await record(pool, ws_id, retry_class) == "dead_lettered"
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        parked = await uow.dead_letters.get(ws_id)
        assert ws.state is S.DEAD_LETTERED and ws.retry_count == 0
        assert await uow.timers.timers_for(ws_id) == []
    assert parked is not None and (parked["reason"], parked["attempts"]) == ("not_retryable", 1)
    assert retry_class.value in parked["detail"]
    # The one "failed for good" event: small facts, the diagnosis stays in PostgreSQL.
    assert await dead_letter_events(pool, ws_id) == [
        {
            "reason": "not_retryable",
            "attempts": 1,
            "attempt": 1,
            "code": "WS-TST-001",
            "retry_class": retry_class.value,
            "retryable": False,
            "detail": parked["detail"],
        }
    ]


async def test_an_exhausted_budget_parks_the_workset_in_the_dead_letter_queue(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=2, retry_count=1, max_retries=1)
    assert await record(pool, ws_id, RetryClass.TRANSIENT, attempt=2) == "dead_lettered"
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        parked = await uow.dead_letters.get(ws_id)
    assert ws.state is S.DEAD_LETTERED
    assert parked is not None and parked["attempts"] == 2 and parked["last_code"] == "WS-TST-001"
    assert parked["reason"] == "retries_exhausted" and "budget of 1 is used up" in parked["detail"]
    assert [e["type"] for e in await events_of(pool, ws_id)][-1] == "workset.dead_lettered"
    [event] = await dead_letter_events(pool, ws_id)
    assert (event["reason"], event["attempt"], event["retryable"]) == ("retries_exhausted", 2, True)


@pytest.mark.parametrize(
    ("retry_class", "reason"),
    [(RetryClass.TRANSIENT, "retries_disabled"), (RetryClass.DATA, "not_retryable")],
)
async def test_with_retries_switched_off_a_failure_ends_in_the_dead_letter_queue(
    pool: asyncpg.Pool, retry_class: RetryClass, reason: str
) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=1)
    assert await record(pool, ws_id, retry_class, policy=None) == "dead_lettered"
    async with UnitOfWork(pool) as uow:
        parked = await uow.dead_letters.get(ws_id)
        assert (await uow.worksets.get(ws_id)).state is S.DEAD_LETTERED
    assert parked is not None and parked["reason"] == reason
    assert [e["reason"] for e in await dead_letter_events(pool, ws_id)] == [reason]


async def test_a_stale_or_repeated_diagnosis_changes_nothing(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=2)
    assert await record(pool, ws_id, RetryClass.TRANSIENT, attempt=1) == "stale"  # an older attempt's
    running = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, attempt=1)
    assert await record(pool, running, RetryClass.TRANSIENT) == "stale"
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(ws_id)).state is S.FAILED
        assert (await uow.worksets.get(running)).state is S.RUNNING
        assert await uow.timers.timers_for(ws_id) == []
    # Dead-lettered once; the same diagnosis again (a redelivery) emits nothing more.
    assert await record(pool, ws_id, RetryClass.DATA, attempt=2) == "dead_lettered"
    assert await record(pool, ws_id, RetryClass.DATA, attempt=2) == "stale"
    assert len(await dead_letter_events(pool, ws_id)) == 1


async def test_retryable_worksets_are_listed_soonest_first_by_tenant_and_due_time(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    waiting = {}
    for tenant, due in (
        ("acme", now + timedelta(hours=1)),
        ("acme", now - timedelta(seconds=1)),
        ("beta", now),
    ):
        ws_id = await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, tenant=tenant, attempt=1, retry_count=1)
        async with UnitOfWork(pool) as uow:
            await uow.timers.add_timer(ws_id, "retry", due, {"attempt": 2})
            await uow.commit()
        waiting[ws_id] = due
    await workset_in(pool, *TO_FAILED, attempt=1)  # failed, not waiting: never listed
    async with UnitOfWork(pool) as uow:
        listed = await uow.timers.get_retryable_worksets()
        acme = await uow.timers.get_retryable_worksets(tenant_id="acme")
        due_now = await uow.timers.get_retryable_worksets(due_by=now + timedelta(seconds=5))
    assert [r.workset_id for r in listed] == sorted(waiting, key=lambda w: waiting[w])
    assert [r.tenant_id for r in acme] == ["acme", "acme"] and acme[0].due_at < acme[1].due_at
    assert len(due_now) == 2 and all(r.due_at <= now + timedelta(seconds=5) for r in due_now)
    assert listed[0].failed_attempt == 1 and listed[0].retry_count == 1 and listed[0].max_retries == 3


async def test_reset_for_retry_from_a_timer_queues_the_next_attempt_unless_cancelled(
    pool: asyncpg.Pool,
) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, attempt=1, retry_count=1)
    cancelled = await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, S.CANCELLED, attempt=1, retry_count=1)
    async with UnitOfWork(pool) as uow:
        queued = await reset_for_retry(uow, ws_id, actor="scheduler", reason="timer due")
        skipped = await reset_for_retry(uow, cancelled, actor="scheduler", reason="timer due")
        await uow.commit()
    assert queued is not None and queued.state is S.QUEUED and queued.retry_count == 1  # budget kept
    assert skipped is None
    queued_events = [e for e in await events_of(pool, ws_id) if e["type"] == "workset.queued"]
    assert queued_events[-1]["payload"]["attempt"] == 2
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(cancelled)).state is S.CANCELLED


async def test_requeue_with_fresh_budget_applies_changes_and_starts_the_budget_again(
    pool: asyncpg.Pool,
) -> None:
    ws_id = await workset_in(
        pool,
        *TO_DEAD_LETTERED,
        attempt=2,
        retry_count=1,
        max_retries=1,
        spec={"pipeline": "p", "max_retries": 1},
    )
    changes = RequeueChanges.parse({"max_retries": 5, "priority": "urgent", "preferred_cluster": "hpc"})
    async with UnitOfWork(pool) as uow:
        ws = await requeue_with_fresh_budget(uow, ws_id, actor="alice", reason="requeued", changes=changes)
        await uow.commit()
    assert ws.state is S.QUEUED
    async with UnitOfWork(pool) as uow:
        stored = await uow.worksets.get(ws_id)
        parked = await uow.dead_letters.list()
    assert stored.state is S.QUEUED and stored.retry_count == 0 and stored.max_retries == 5
    assert stored.priority == "urgent" and stored.attempt == 2  # the next admission makes it attempt 3
    assert stored.spec == {
        "pipeline": "p",
        "max_retries": 5,
        "priority": "urgent",
        "preferred_cluster": "hpc",
    }
    assert parked == []


async def test_an_operator_cannot_requeue_a_workset_that_has_not_failed(pool: asyncpg.Pool) -> None:
    running = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        with pytest.raises(WorksetNotRequeueable, match="is running; only dead-lettered or failed"):
            await requeue_with_fresh_budget(uow, running, actor="alice", reason="x")


async def test_each_way_back_to_the_queue_leaves_the_other_ones_worksets_alone(pool: asyncpg.Pool) -> None:
    """A retry timer never requeues a failed or parked workset; an operator never skips a pending retry."""
    failed = await workset_in(pool, *TO_FAILED, attempt=1, retry_count=1)
    parked = await workset_in(pool, *TO_DEAD_LETTERED, attempt=2, retry_count=1, max_retries=1)
    waiting = await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, attempt=1, retry_count=1)
    async with UnitOfWork(pool) as uow:
        assert await reset_for_retry(uow, failed, actor="scheduler", reason="timer due") is None
        assert await reset_for_retry(uow, parked, actor="scheduler", reason="timer due") is None
        with pytest.raises(WorksetNotRequeueable, match="is retry_wait; only dead-lettered or failed"):
            await requeue_with_fresh_budget(uow, waiting, actor="alice", reason="x")
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(failed)).state is S.FAILED
        assert (await uow.worksets.get(parked)).state is S.DEAD_LETTERED
        assert (await uow.worksets.get(waiting)).state is S.RETRY_WAIT
        assert [d["workset_id"] for d in await uow.dead_letters.list()] == [parked]


async def test_an_operator_can_requeue_a_failed_workset_that_was_never_parked(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *TO_FAILED, attempt=1, retry_count=2)
    async with UnitOfWork(pool) as uow:
        ws = await requeue_with_fresh_budget(uow, ws_id, actor="alice", reason="fixed the input")
        await uow.commit()
    assert ws.state is S.QUEUED and ws.retry_count == 0 and ws.attempt == 1
    events = await events_of(pool, ws_id)
    assert events[-1]["type"] == "workset.queued" and events[-1]["payload"]["attempt"] == 2
