"""The scheduler's repositories (step runs, slots, clusters) on a real PostgreSQL: step runs before submission, completed steps per cluster,
region health, tenant limits kept equal to the customer's quota."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from stamen.domain.lifecycle import WorksetState
from stamen.domain.steps import StepRunState
from stamen.domain.workset import Workset
from stamen.events.types import StepStarted
from stamen.executors.base import JobHandle, JobState, JobStatus
from stamen.store.step_runs import record_running_step_submission, step_run_locks, submission_lock
from stamen.store.unit_of_work import UnitOfWork
from tests.store.worksetkit import workset_in

S = WorksetState
RUNNING = (S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING)


def handle(ws_id: str, step: str, attempt: int = 1) -> JobHandle:
    return JobHandle(
        executor="local", cluster="a", job_id="123", workset_id=ws_id, attempt=attempt, step=step,
        workdir="/tmp/x", submitted_at=datetime.now(UTC),
    )  # fmt: skip


async def test_a_step_is_recorded_before_submission_and_keeps_the_workset_from_being_claimed_twice(
    pool: asyncpg.Pool,
) -> None:
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.claim_undispatched() == [ws_id]
        claim = await uow.step_runs.record_submitting(
            workset_id=ws_id, attempt=1, step="one", step_index=0, cluster="a", holder="s1"
        )
        await uow.commit()
    run_id = claim.step_run_id
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.claim_undispatched() == []  # being submitted: not dispatched again
        assert await uow.step_runs.active_step_runs("a") == []  # no handle to poll yet
        assert await uow.step_runs.lock_submitting(claim)
        await uow.step_runs.record_submitted(run_id, handle(ws_id, "one"))
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        active = await uow.step_runs.active_step_runs("a")
        assert [(r.id, r.state, r.handle.job_id) for r in active] == [(run_id, "running", "123")]
        assert not await uow.step_runs.lock_submitting(claim)  # no longer 'submitting'


async def test_only_submissions_nobody_holds_older_than_the_grace_period_are_taken_as_orphaned(
    pool: asyncpg.Pool,
) -> None:
    alive = await workset_in(pool, *RUNNING, attempt=1)
    dead = await workset_in(pool, *RUNNING, attempt=1)
    ids = {}
    async with UnitOfWork(pool) as uow:
        for ws_id in (alive, dead):
            ids[ws_id] = await uow.step_runs.record_submitting(
                workset_id=ws_id, attempt=1, step="one", step_index=0, cluster="a", holder="s1"
            )
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.stale_submissions(60) == []  # too recent
        assert await uow.step_runs.stale_submission(ids[dead].step_run_id, 60) is None
    await asyncio.sleep(0.2)
    async with submission_lock(pool, ids[alive]) as submitting:  # a live submitter holds its step run
        assert submitting
        async with UnitOfWork(pool) as uow:
            stale = await uow.step_runs.stale_submissions(0.1)
        assert stale == [ids[alive].step_run_id, ids[dead].step_run_id]  # oldest first, nothing locked
        async with step_run_locks(pool, [ids[alive].step_run_id]) as held:
            assert not held  # the reconciler leaves it alone
        async with step_run_locks(pool, [ids[dead].step_run_id]) as held:
            assert held
            async with UnitOfWork(pool) as uow:
                orphan = await uow.step_runs.stale_submission(ids[dead].step_run_id, 0.1)
            assert orphan is not None and orphan.workset_id == dead and orphan.submitted_by == "s1"
            async with UnitOfWork(pool) as uow:
                assert await uow.step_runs.lock_orphan(orphan)
                await uow.step_runs.end_unsubmitted(orphan.id, StepRunState.LOST, "the submitter died")
                await uow.commit()
            async with UnitOfWork(pool) as uow:
                assert not await uow.step_runs.lock_orphan(orphan)  # settled: nothing more is recorded
                assert await uow.step_runs.stale_submissions(0.1, skip=[ids[alive].step_run_id]) == []
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT workset_id, state, reason, ended_at FROM step_runs ORDER BY id")
    assert [(r["workset_id"], r["state"]) for r in rows] == [(alive, "submitting"), (dead, "lost")]
    assert rows[1]["reason"] == "the submitter died" and rows[1]["ended_at"] is not None


async def test_a_live_submitters_submission_lock_keeps_others_away_without_locking_the_row(
    pool: asyncpg.Pool,
) -> None:
    """While the executor submits, only the session lock is held: no row lock, no open transaction."""
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        claim = await uow.step_runs.record_submitting(
            workset_id=ws_id, attempt=1, step="one", step_index=0, cluster="a", holder="s1"
        )
        await uow.commit()
    await asyncio.sleep(0.2)
    async with submission_lock(pool, claim) as held:
        assert held
        async with step_run_locks(pool, [claim.step_run_id]) as taken:
            assert not taken  # reconcilers and evacuation wait
        async with UnitOfWork(pool) as monitor:
            ended = JobStatus(handle=handle(ws_id, "one"), state=JobState.SUCCEEDED)
            assert not await monitor.step_runs.finish_active_step_run(claim.step_run_id, ended)
        async with pool.acquire() as conn:
            locked = "SELECT s.id FROM step_runs s JOIN worksets w ON w.id = s.workset_id WHERE s.id = $1 FOR UPDATE NOWAIT"
            assert await conn.fetchval(locked, claim.step_run_id) == claim.step_run_id
            in_transaction = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND state LIKE 'idle in transaction%'"""
            )
            assert in_transaction == 0
    async with step_run_locks(pool, [claim.step_run_id]) as taken:  # released with its body
        assert taken


async def test_the_monitor_leaves_a_job_alone_while_its_step_run_lock_is_held(pool: asyncpg.Pool) -> None:
    """Evacuation holds the lock while it stops the job: the monitor does not record that job's end."""
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        claim = await uow.step_runs.record_submitting(
            workset_id=ws_id, attempt=1, step="one", step_index=0, cluster="a", holder="s1"
        )
        await uow.step_runs.record_submitted(claim.step_run_id, handle(ws_id, "one"))
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        [step] = await uow.step_runs.active_steps(ws_id, 1)
    async with step_run_locks(pool, [step.id]) as held:
        assert held
        ended = JobStatus(handle=handle(ws_id, "one"), state=JobState.SUCCEEDED)
        async with UnitOfWork(pool) as monitor:
            assert not await monitor.step_runs.finish_active_step_run(step.id, ended)
        async with UnitOfWork(pool) as uow:
            assert await uow.step_runs.lock_steps_unchanged(ws_id, 1, [step])
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.finish_active_step_run(step.id, ended)
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        assert not await uow.step_runs.finish_active_step_run(step.id, ended)  # no longer active
    async with UnitOfWork(pool) as uow:
        assert not await uow.step_runs.lock_steps_unchanged(ws_id, 1, [step])  # it ended meanwhile


async def test_completed_steps_are_those_of_the_same_cluster(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        # Attempt 1 on cluster a got two steps done; attempt 2 moved to b and got one done.
        for attempt, step, cluster in ((1, "one", "a"), (1, "two", "a"), (2, "one", "b")):
            job = handle(ws_id, step, attempt)
            run_id = (
                await uow.step_runs.record_submitting(
                    workset_id=ws_id, attempt=attempt, step=step, step_index=0, cluster=cluster, holder="s1"
                )
            ).step_run_id
            await uow.step_runs.record_submitted(run_id, job)
            await uow.step_runs.finish_step_run(run_id, JobStatus(handle=job, state=JobState.SUCCEEDED))
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        assert (await uow.step_runs.succeeded_steps(ws_id, "a"))[0] == {"one", "two"}
        assert (await uow.step_runs.succeeded_steps(ws_id, "b"))[0] == {"one"}
        assert (await uow.step_runs.succeeded_steps(ws_id, "c"))[0] == set()
        # Anywhere: each step with the cluster of its first success.
        assert (await uow.step_runs.succeeded_steps(ws_id, "c"))[1] == {"one": "a", "two": "a"}


async def test_region_health_is_read_back_and_unknown_regions_have_no_entry(pool: asyncpg.Pool) -> None:
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.region_health() == {}
        await uow.slots.set_region_health("us-east-1", "down", "AZ outage")
        await uow.slots.set_region_health("us-east-1", "degraded", "recovering")
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.region_health() == {"us-east-1": "degraded"}


async def test_a_takeover_voids_the_stalled_submitters_claim(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        stalled = await uow.step_runs.record_submitting(
            workset_id=ws_id, attempt=1, step="one", step_index=0, cluster="a", holder="s1"
        )
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        taken = await uow.step_runs.restart_submitting(stalled.step_run_id, "s2")
        await uow.commit()
    assert taken.holder == "s2" and taken.since > stalled.since
    async with UnitOfWork(pool) as uow:
        assert not await uow.step_runs.lock_submitting(stalled)  # the row is s2's now: s1 submits nothing
    async with submission_lock(pool, stalled) as held:
        assert not held
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.lock_submitting(taken)


async def test_a_submission_is_recorded_only_while_its_claim_holds_and_gives_its_lock_back(
    pool: asyncpg.Pool,
) -> None:
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with pool.acquire() as conn:  # the submitting session: records the row and takes its lock
        async with UnitOfWork.on(conn) as uow:
            stalled = await uow.step_runs.record_submitting(
                workset_id=ws_id,
                attempt=1,
                step="one",
                step_index=0,
                cluster="a",
                holder="s1",
                hold_lock=True,
            )
            await uow.commit()
        async with step_run_locks(pool, [stalled.step_run_id]) as held:
            assert not held  # the submitter holds it
        async with UnitOfWork(pool) as uow:  # taken over meanwhile: the stalled claim records nothing
            taken = await uow.step_runs.restart_submitting(stalled.step_run_id, "s2")
            await uow.commit()
        async with UnitOfWork.on(conn) as uow:
            assert not await uow.step_runs.record_claimed_submission(
                stalled, handle(ws_id, "one"), release_lock=True
            )
        async with UnitOfWork(pool) as uow:
            assert await uow.step_runs.active_step_runs("a") == []  # still 'submitting'
        async with UnitOfWork.on(conn) as uow:
            assert await uow.step_runs.record_claimed_submission(
                taken, handle(ws_id, "one"), release_lock=True
            )
            await uow.commit()
        async with step_run_locks(pool, [stalled.step_run_id]) as held:
            assert held  # given back by the statement that recorded the handle
    async with UnitOfWork(pool) as uow:
        active = await uow.step_runs.active_step_runs("a")
        assert [(r.id, r.state, r.handle.job_id) for r in active] == [(stalled.step_run_id, "running", "123")]


async def test_a_running_workset_s_next_step_is_recorded_with_its_event_in_one_statement_while_its_claim_holds(
    pool: asyncpg.Pool,
) -> None:
    """The handle, the lock given back and workset.step_started commit together, or (a claim taken over
    meanwhile) nothing does: no event for a step whose handle was not stored."""
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        ws: Workset = await uow.worksets.get(ws_id)
        version = ws.version
    async with pool.acquire() as conn:
        async with UnitOfWork.on(conn) as uow:
            stalled = await uow.step_runs.record_submitting(
                workset_id=ws_id,
                attempt=1,
                step="two",
                step_index=1,
                cluster="a",
                holder="s1",
                hold_lock=True,
            )
            await uow.commit()
        async with UnitOfWork(pool) as uow:  # taken over meanwhile: the stalled claim records nothing
            taken = await uow.step_runs.restart_submitting(stalled.step_run_id, "s2")
            await uow.commit()
        event = ws.envelope(StepStarted(step="two", attempt=1))
        assert not await record_running_step_submission(conn, stalled, handle(ws_id, "two"), [event])
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", event.id) == 0
        assert await record_running_step_submission(conn, taken, handle(ws_id, "two"), [event])
        async with step_run_locks(pool, [stalled.step_run_id]) as held:
            assert held  # given back by the statement
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", event.id) == 1
    async with UnitOfWork(pool) as uow:
        active = await uow.step_runs.active_step_runs("a")
        assert [(r.id, r.state, r.handle.step) for r in active] == [(stalled.step_run_id, "running", "two")]
        assert (await uow.worksets.get(ws_id)).version == version  # the workset's row is not written
