"""Reconcilers drive worksets forward from PostgreSQL when their event never comes: a submission is
validated, a failure diagnosed, a diagnosis acted on, a lost retry timer replaced, each by the
consumer's own handler (under its inbox claim, or the workset's state for the validator's decision), so
the late event (or a second pass) changes nothing."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from services.diagnostics.reconcile import undiagnosed_failures
from services.scheduler.handlers import decide_retry, retry_policy
from services.scheduler.reconcile import lost_retry_timers, pending_retry_decisions
from services.scheduler.tests.support import (
    add_cluster,
    enqueue,
    in_process_scheduler,
    run_until,
    write_pipelines,
)
from services.validator import handlers as validator
from services.validator.checks import check_submission
from services.validator.reconcile import stale_submissions
from stamen.bus.consumer import Delivery
from stamen.inputs.demo import DEMO_BUCKET
from stamen.inputs.tenant import TenantFacts
from stamen.intake import submit_workset
from stamen.service.idempotent import idempotent
from stamen.settings import Settings
from stamen.store.recovery import RecoveryRepository
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketRight, TenantBuckets

NET_ERROR = (
    "botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "
    '"https://lab-bucket.s3.us-west-2.amazonaws.com/reads/S1_R1.fastq.gz"'
)
REPO = Path(__file__).resolve().parents[2]
FIRST = Delivery(subject="test", stream_seq=1, num_delivered=1, headers={})


def settings_for(tmp_path: Path, **extra: Any) -> Settings:
    steps = [
        {
            "name": "fetch",
            "argv": ["{python}", "-c", f"import sys; print({NET_ERROR!r}, file=sys.stderr); sys.exit(1)"],
        }
    ]
    defaults: dict[str, Any] = {
        "reconcile_after_seconds": 0,
        "enable_validation": False,
        "retry_initial_seconds": 60,
    }
    return Settings(
        pipelines_file=write_pipelines(tmp_path / "pipelines.yaml", steps),
        work_dir=tmp_path / "work",
        **{**defaults, **extra},
    )


async def history(pool: asyncpg.Pool, workset_id: str) -> list[str]:
    async with UnitOfWork(pool) as uow:
        return [h.to_state for h in await uow.worksets.history(workset_id)]


async def test_a_submission_whose_event_never_came_is_validated_once(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)

    async def check(spec: dict[str, Any], tenant: TenantFacts) -> Any:
        return await check_submission(spec, tenant_id=tenant.tenant_id, checker=None, cluster_region="us-west-2",
                                      rights=TenantBuckets(tenant.tenant_id, (BucketRight(DEMO_BUCKET, "read-write", "grant"),)),
                                      enable_validation=False)  # fmt: skip

    handler = functools.partial(
        validator.validate_submitted,
        pool=lambda: pool,
        check=check,
        max_deliver=5,
    )
    spec = yaml.safe_load((REPO / "libs/stamen/demo/demo_workset.yaml").read_text())
    submitted = await submit_workset(pool, tenant_id="acme", name="lost", spec=spec, region="us-west-2",
                                     source="api", actor="test")  # fmt: skip
    # Nothing relays or delivers the event: only the reconciler can move the workset on.
    reconcile = stale_submissions(pool, handler, settings)
    assert await reconcile.run() == 1
    assert await history(pool, submitted.workset_id) == ["submitted", "validating", "queued"]
    assert await reconcile.run() == 0  # nothing waits any more

    # The event arrives after all (it had only been late): the workset is queued, so it is a no-op.
    async with UnitOfWork(pool) as uow:
        waiting = await RecoveryRepository(uow.connection).stale_submissions(0)
        event_id = await uow.connection.fetchval(
            "SELECT event_id FROM workset_history WHERE workset_id = $1 AND from_state IS NULL",
            submitted.workset_id,
        )
        event = await RecoveryRepository(uow.connection).stored_event(event_id)
    assert waiting == [] and event is not None
    await handler(event, FIRST)
    assert await history(pool, submitted.workset_id) == ["submitted", "validating", "queued"]


async def test_a_failure_whose_events_were_lost_is_diagnosed_and_retried(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    await add_cluster(pool, workdir=tmp_path / "work")
    kept, purged = await enqueue(pool, "acme"), await enqueue(pool, "acme")
    loop = in_process_scheduler(pool, settings)
    for ws in (kept, purged):
        assert await run_until(loop, pool, ws, {"failed"}) == "failed"
    async with pool.acquire() as conn:  # one workset's workset.failed is no longer in the outbox
        deleted = await conn.execute(
            """DELETE FROM outbox WHERE convert_from(body, 'UTF8') LIKE '%"type":"workset.failed"%'
               AND convert_from(body, 'UTF8') LIKE $1""",
            f"%{purged}%",
        )
    assert deleted == "DELETE 1"

    diagnose = undiagnosed_failures("diagnostics-failed", pool, settings)
    assert await diagnose.run() == 2
    async with UnitOfWork(pool) as uow:
        for ws in (kept, purged):
            (diagnosis,) = await uow.diagnoses.for_workset(ws)
            assert diagnosis.retry_class == "transient"  # the log tail was read from the step run, both ways
    assert await diagnose.run() == 0

    retry = functools.partial(decide_retry, policy=retry_policy(settings))
    decide = pending_retry_decisions("scheduler-diagnosed", pool, retry, settings)
    assert await decide.run() == 2
    for ws in (kept, purged):
        assert (await history(pool, ws))[-2:] == ["failed", "retry_wait"]
    assert await decide.run() == 0
    # A workset.diagnosed delivered late: the consumer's handler finds its claim taken.
    async with UnitOfWork(pool) as uow:
        (diagnosis,) = await uow.diagnoses.for_workset(kept)
        late = await RecoveryRepository(uow.connection).stored_event(
            await uow.connection.fetchval("SELECT event_id FROM diagnoses WHERE workset_id = $1", kept)
        )
    assert late is not None
    await idempotent("scheduler-diagnosed", lambda: pool, retry)(late, FIRST)
    assert (await history(pool, kept)).count("retry_wait") == 1

    # A retry_wait whose timer is gone gets one due now.
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM timers WHERE workset_id = $1", kept)
    timers = lost_retry_timers(pool, settings)
    assert await timers.run() == 1
    async with UnitOfWork(pool) as uow:
        (due,) = await uow.timers.get_retryable_worksets(tenant_id="acme", limit=1)
    assert due.workset_id == kept
    assert await timers.run() == 0


async def test_worksets_younger_than_the_threshold_are_left_to_their_events(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, reconcile_after_seconds=3600)
    await submit_workset(pool, tenant_id="acme", name="fresh", spec={"pipeline": "test-pipe", "samples": []},
                         region="us-west-2", source="api", actor="test")  # fmt: skip
    handler = functools.partial(_never, "the validator must not be called")
    assert await stale_submissions(pool, handler, settings).run() == 0  # type: ignore[arg-type]


async def _never(message: str, *_: object) -> None:
    raise AssertionError(message)
