"""The diagnostics handler on the real store: failure in, ranked diagnosis out, once."""

from __future__ import annotations

import json

import asyncpg

from services.diagnostics.app import CONSUMER
from services.diagnostics.handlers import diagnose_failure
from stamen.bus.consumer import Delivery
from stamen.events.envelope import Envelope, new_envelope
from stamen.events.types import WorksetFailed
from stamen.intake import submit_workset
from stamen.service.idempotent import idempotent
from stamen.store.unit_of_work import UnitOfWork

DELIVERY = Delivery(subject="stamen.evt.acme.workset.failed", stream_seq=1, num_delivered=1, headers={})
OOM_LOG = """[Sun Nov 29 04:01:02 2026] bwa mem -t 16 ref.fa S1_R1.fq.gz S1_R2.fq.gz
slurmstepd: error: Detected 1 oom-kill event(s) in StepId=4211.batch. Some of your processes may have been killed by the cgroup out-of-memory handler.
"""


async def failed_event(
    pool: asyncpg.Pool, log_tail: str, exit_code: int | None, native: str = ""
) -> tuple[str, Envelope]:
    result = await submit_workset(
        pool, tenant_id="acme", name="w", spec={}, region="us-west-2", source="api", actor="test"
    )
    # The step's log tail is where the scheduler's monitor keeps it; the event points at the step run.
    async with UnitOfWork(pool) as uow:
        claim = await uow.step_runs.record_submitting(
            workset_id=result.workset_id, attempt=1, step="align", step_index=0, cluster="local", holder="t"
        )
        await uow.connection.execute(
            "UPDATE step_runs SET state = 'failed', log_tail = $2 WHERE id = $1", claim.step_run_id, log_tail
        )
        await uow.commit()
    payload = WorksetFailed(
        attempt=1, step="align", step_run_id=claim.step_run_id, exit_code=exit_code, native_state=native
    )
    return result.workset_id, new_envelope(
        payload, tenant_id="acme", region="us-west-2", workset_id=result.workset_id
    )


async def test_oom_is_diagnosed_as_a_retryable_resource_error(pool: asyncpg.Pool) -> None:
    ws_id, event = await failed_event(pool, OOM_LOG, 137, "OUT_OF_MEMORY")
    handler = idempotent(CONSUMER, lambda: pool, diagnose_failure)
    await handler(event, DELIVERY)
    await handler(event, DELIVERY)  # redelivery: no second diagnosis
    async with UnitOfWork(pool) as uow:
        [diag] = await uow.diagnoses.for_workset(ws_id)
    assert diag.code.startswith("WS-RES-") and diag.retryable and diag.retry_class == "resource"
    assert any("oom-kill" in line for line in diag.candidates[0]["evidence"])
    async with pool.acquire() as conn:
        bodies = [
            json.loads(bytes(r["body"])) for r in await conn.fetch("SELECT body FROM outbox ORDER BY id")
        ]
    diagnosed = [b for b in bodies if b["type"] == "workset.diagnosed"]
    assert len(diagnosed) == 1 and diagnosed[0]["causation_id"] == str(event.id)
    assert diagnosed[0]["payload"]["code"] == diag.code


async def test_unknown_failure_gets_ws_unk_000_with_the_log_tail(pool: asyncpg.Pool) -> None:
    ws_id, event = await failed_event(pool, "something odd happened\nand then it stopped", None)
    await idempotent(CONSUMER, lambda: pool, diagnose_failure)(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        [diag] = await uow.diagnoses.for_workset(ws_id)
    assert diag.code == "WS-UNK-000" and not diag.retryable
    assert "and then it stopped" in diag.report


async def test_run_stopped_at_max_duration_is_not_retryable(pool: asyncpg.Pool) -> None:
    log_tail = (
        "stamen: ran longer than its max duration of 3600s; the job was stopped (max duration exceeded)"
    )
    # The max-duration guard stops the workset, not one step run: the event's reason is all there is.
    ws_id, _ = await failed_event(pool, "", None)
    event = new_envelope(
        WorksetFailed(attempt=1, reason=log_tail, native_state="MAX_DURATION"),
        tenant_id="acme",
        region="us-west-2",
        workset_id=ws_id,
    )
    await idempotent(CONSUMER, lambda: pool, diagnose_failure)(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        [diag] = await uow.diagnoses.for_workset(ws_id)
    assert diag.code == "WS-CFG-010" and diag.retry_class == "configuration" and not diag.retryable
    assert diag.candidates[0]["facts"] == ["job state MAX_DURATION"]
    assert "max_duration_seconds" in diag.report  # the remediation says which setting to raise


async def test_lost_job_is_retryable(pool: asyncpg.Pool) -> None:
    ws_id, event = await failed_event(
        pool, "[M::process] read 662252 sequences (80000167 bp)...", None, "LOST"
    )
    await idempotent(CONSUMER, lambda: pool, diagnose_failure)(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        [diag] = await uow.diagnoses.for_workset(ws_id)
    assert diag.code == "WS-CLU-009" and diag.retry_class == "transient" and diag.retryable
