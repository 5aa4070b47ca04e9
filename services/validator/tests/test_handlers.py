"""The validator's handlers against the real store and moto's S3: queued (with the estimate) or
rejected, once per event; storage outages retried; Daylily sentinels written for dropped worksets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import pytest

from services.validator.checks import CheckResult, check_submission
from services.validator.handlers import Check, keep_sentinel, validate_submitted
from stamen.bus.consumer import Delivery, EventHandler, RetryLater
from stamen.events import decode_envelope
from stamen.events.envelope import Envelope, new_envelope
from stamen.events.types import (
    EventPayload,
    WorksetCancelled,
    WorksetCompleted,
    WorksetDeadLettered,
    WorksetRejected,
)
from stamen.inputs import sentinels
from stamen.inputs.objects import S3ObjectStore, open_object_store
from stamen.inputs.repository import DropRecord, IntakeRepository
from stamen.inputs.settings import IntakeSettings
from stamen.inputs.storage import StorageChecker
from stamen.inputs.tenant import TenantFacts
from stamen.inputs.validation import INLINE_MAX_SAMPLES
from stamen.intake import submit_workset
from stamen.service.idempotent import idempotent
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketRight, TenantBuckets
from tests.intake.s3kit import S3Lab

DELIVERY = Delivery(subject="stamen.evt.acme.workset.submitted", stream_seq=1, num_delivered=1, headers={})


@pytest.fixture
async def store(s3lab: S3Lab) -> AsyncIterator[S3ObjectStore]:
    async with open_object_store(Settings(AWS_ENDPOINT_URL=s3lab.url), IntakeSettings()) as opened:
        yield opened


def checker_for(store: S3ObjectStore, bucket: str, *, enable_validation: bool = True) -> Check:
    """The validator's check, with the tenant allowed to use `bucket` (the lab's) and nothing else."""

    async def check(spec: dict[str, Any], tenant: TenantFacts) -> CheckResult:
        return await check_submission(
            spec,
            tenant_id=tenant.tenant_id,
            checker=StorageChecker(store, IntakeSettings()),
            cluster_region="us-west-2",
            rights=TenantBuckets(tenant.tenant_id, (BucketRight(bucket, "read-write", "grant"),)),
            enable_validation=enable_validation,
        )

    return check


async def submit_and_get_event(pool: asyncpg.Pool, spec: dict[str, Any]) -> tuple[str, Envelope]:
    result = await submit_workset(pool, tenant_id="acme", name="w", spec=spec, region="us-west-2", source="api",
                                  actor="test")  # fmt: skip
    async with pool.acquire() as conn:
        body = await conn.fetchval(
            "SELECT body FROM outbox WHERE subject LIKE '%workset.submitted' ORDER BY id DESC LIMIT 1"
        )
    return result.workset_id, decode_envelope(bytes(body))


async def stored_findings(pool: asyncpg.Pool, ws_id: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        stored = await IntakeRepository(conn).validation_for(ws_id)
    assert stored is not None
    return list(stored["findings"])


async def outbox(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    return [json.loads(bytes(r["body"])) for r in rows]


def handler_for(pool: asyncpg.Pool, store: S3ObjectStore, bucket: str) -> EventHandler:
    """The validator's workset.submitted handler as the service wires it, checking against `bucket`."""
    return partial(
        validate_submitted,
        pool=lambda: pool,
        check=checker_for(store, bucket),
        max_deliver=5,
    )


async def test_valid_spec_is_queued_with_the_estimate(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    ws_id, event = await submit_and_get_event(pool, s3lab.spec())
    await handler_for(pool, store, s3lab.bucket)(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        history = await uow.worksets.history(ws_id)
        stored = await IntakeRepository(uow.connection).validation_for(ws_id)
    assert ws.state.value == "queued"
    assert [h.to_state for h in history] == ["submitted", "validating", "queued"]
    bodies = await outbox(pool)
    assert [b["type"] for b in bodies] == ["workset.submitted", "workset.validated", "workset.queued"]
    assert stored is not None and stored["ok"]
    estimate = stored["estimate"]
    assert estimate["pipeline"] == "fastq-qc" and estimate["unsized_inputs"] == [] and estimate["gbases"] > 0
    # Claim check: the event names the facts; the estimate itself is in workset_validations.
    assert bodies[1]["payload"] == {"warning_count": 0, "cost_usd_median": estimate["cost_usd_median"]}
    assert all(b["correlation_id"] == str(event.correlation_id) for b in bodies)


async def test_a_small_spec_is_checked_on_the_loop_and_a_large_one_in_a_thread(
    s3lab: S3Lab, store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing and checking a few samples costs less CPU than two trips to a thread and back (each waits
    for the GIL on a busy loop); a large spec still leaves the loop serving (a CPU second at 10,000)."""
    handed: list[str] = []
    to_thread = asyncio.to_thread

    async def recorded(work: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        handed.append(work.__name__)
        return await to_thread(work, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recorded)
    check = checker_for(store, s3lab.bucket)
    tenant = TenantFacts("acme", TenantBuckets("acme", ()), None)
    small = await check(s3lab.spec(samples=1), tenant)
    assert small.ok, small.errors
    assert handed == []
    large = await check(s3lab.spec(samples=INLINE_MAX_SAMPLES + 1), tenant)
    assert large.ok, large.errors
    assert handed == ["import_form", "_report"]


async def test_redelivered_event_has_no_second_effect(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    ws_id, event = await submit_and_get_event(pool, s3lab.spec())
    handler = handler_for(pool, store, s3lab.bucket)
    await handler(event, DELIVERY)
    await handler(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        assert len(await uow.worksets.history(ws_id)) == 3
    assert len(await outbox(pool)) == 3


async def test_deliveries_racing_each_other_decide_once_without_an_inbox_claim(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    """Two deliveries of one workset.submitted at once (a redelivery after the ack wait while the first
    still runs its checks; two validators): both run the checks, the decision is applied once (the row
    lock, and no way back into `submitted` or `validating`), and no inbox row is written for it."""
    ws_id, event = await submit_and_get_event(pool, s3lab.spec())
    handler = handler_for(pool, store, s3lab.bucket)
    await asyncio.gather(handler(event, DELIVERY), handler(event, DELIVERY))
    async with UnitOfWork(pool) as uow:
        states = [h.to_state for h in await uow.worksets.history(ws_id)]
    assert states == ["submitted", "validating", "queued"]
    assert [e["type"] for e in await outbox(pool)] == [
        "workset.submitted", "workset.validated", "workset.queued"
    ]  # fmt: skip
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0


async def test_storage_findings_reject_the_workset(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    spec = s3lab.spec(reference_genome="GRCh99")
    s3lab.put("reads/S1_R2.fastq.gz", b"")
    ws_id, event = await submit_and_get_event(pool, spec)
    await handler_for(pool, store, s3lab.bucket)(event, DELIVERY)
    bodies = await outbox(pool)
    assert bodies[-1]["type"] == "workset.rejected"
    payload = bodies[-1]["payload"]
    assert payload["error_count"] == 2 and sorted(payload["codes"]) == ["SNF-OBJ-002", "VAL-REF-001"]
    stored = await stored_findings(pool, ws_id)
    found = {(f["code"], f["field"]) for f in stored}
    assert found == {("VAL-REF-001", "reference_genome"), ("SNF-OBJ-002", "samples[0].r2")}
    assert all(f["fix"] for f in stored)


async def test_validating_is_visible_while_the_checks_run(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    """`validating` is committed before the S3 checks, not with their outcome: anyone reading the workset
    while they run (a person, the portal's timeline) sees it (it used to go submitted -> queued at once)."""
    ws_id, event = await submit_and_get_event(pool, s3lab.spec())
    seen: list[str] = []
    check = checker_for(store, s3lab.bucket)

    async def watched(spec: dict[str, Any], tenant: TenantFacts) -> CheckResult:
        async with UnitOfWork(pool) as uow:  # another connection, as a reader would
            seen.append((await uow.worksets.get(ws_id)).state.value)
        return await check(spec, tenant)

    await partial(validate_submitted, pool=lambda: pool, check=watched, max_deliver=5)(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        history = await uow.worksets.history(ws_id)
    assert seen == ["validating"]
    assert [h.to_state for h in history] == ["submitted", "validating", "queued"]
    assert history[1].at < history[2].at


async def test_storage_outage_is_retried_then_rejected_on_the_last_delivery(
    pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    ws_id, event = await submit_and_get_event(pool, s3lab.spec())
    intake = IntakeSettings(storage_timeout_seconds=0.5)
    async with open_object_store(Settings(AWS_ENDPOINT_URL="http://127.0.0.1:9"), intake) as dead:
        handler = partial(
            validate_submitted,
            pool=lambda: pool,
            check=checker_for(dead, s3lab.bucket),
            max_deliver=3,
        )
        with pytest.raises(RetryLater):
            await handler(event, DELIVERY)
        async with UnitOfWork(pool) as uow:
            # The checks ran and will run again: the workset shows it is being validated.
            assert (await uow.worksets.get(ws_id)).state.value == "validating"
        last = Delivery(subject=DELIVERY.subject, stream_seq=1, num_delivered=3, headers={})
        await handler(event, last)
    bodies = await outbox(pool)
    assert bodies[-1]["type"] == "workset.rejected" and bodies[-1]["payload"]["codes"] == ["SNF-OBJ-006"]
    assert {f["code"] for f in await stored_findings(pool, ws_id)} == {"SNF-OBJ-006"}


async def test_with_validation_disabled_a_readable_spec_is_queued_unchecked(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    spec = {
        "name": "w",
        "samples": [{"id": "S1", "platform": "ILMN", "r1": "s3://nowhere-bucket/a_R1.fastq.gz"}],
    }
    ws_id, event = await submit_and_get_event(pool, spec)
    await partial(
        validate_submitted,
        pool=lambda: pool,
        check=checker_for(store, "nowhere-bucket", enable_validation=False),
        max_deliver=5,
    )(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        history = await uow.worksets.history(ws_id)
    assert history[-1].to_state == "queued" and "without validation" in history[-1].reason
    assert (await outbox(pool))[1]["payload"] == {"warning_count": 0, "cost_usd_median": None}
    # Even unvalidated, what is not a WorksetSpec is rejected: nothing downstream could run it.
    broken_id, broken = await submit_and_get_event(pool, {"name": "x", "samples": "not a list"})
    await partial(
        validate_submitted,
        pool=lambda: pool,
        check=checker_for(store, "nowhere-bucket", enable_validation=False),
        max_deliver=5,
    )(broken, DELIVERY)
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(broken_id)).state.value == "rejected"
    # Nor does it skip the tenant boundary: a bucket the tenant may not use is refused all the same.
    foreign_id, foreign = await submit_and_get_event(pool, spec)
    await partial(
        validate_submitted,
        pool=lambda: pool,
        check=checker_for(store, "another-bucket", enable_validation=False),
        max_deliver=5,
    )(foreign, DELIVERY)
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(foreign_id)).state.value == "rejected"
    [refused] = await stored_findings(pool, foreign_id)
    assert (refused["code"], refused["field"]) == ("S3-ACCESS-001", "samples[0].r1")


REJECTION = {
    "code": "VAL-REF-001",
    "field": "reference_genome",
    "message": "hg99 is unknown",
    "severity": "error",
    "fix": "use hg38",
}
# event -> (its payload, the sentinel it makes true, the message of daylily.error; None: a bare timestamp)
SENTINEL_CASES: dict[str, tuple[EventPayload, str, str | None]] = {
    "completed": (WorksetCompleted(), sentinels.COMPLETE, None),
    "rejected": (
        WorksetRejected(error_count=1, codes=["VAL-REF-001"]),
        sentinels.ERROR,
        "rejected: VAL-REF-001 reference_genome: hg99 is unknown",
    ),
    "dead_lettered": (
        WorksetDeadLettered(reason="out of memory\nin step align", attempts=4),
        sentinels.ERROR,
        "dead-lettered after 4 attempts: out of memory in step align",
    ),
    "cancelled": (
        WorksetCancelled(cancelled_by="operator:alice", reason="wrong reference"),
        sentinels.ERROR,
        "cancelled by operator:alice: wrong reference",
    ),
}


async def dropped_from_folder(pool: asyncpg.Pool, s3lab: S3Lab, ws_id: str, run: str) -> str:
    """Record that `ws_id` came from an S3 drop folder (daylily.in_progress written); returns the folder."""
    folder = f"daylily_monitoring/active_worksets/{run}/"
    async with pool.acquire() as conn:
        # What the validator saved when it rejected: the sentinel reads the findings here, not in the event.
        await IntakeRepository(conn).save_validation(
            ws_id, ok=False, findings=[REJECTION], estimate=None, note=None
        )
        await IntakeRepository(conn).record_drop(
            DropRecord(
                bucket=s3lab.bucket,
                folder=folder,
                ready_etag=f'"{run}"',
                ready_modified=datetime.now(UTC),
                tenant_id="acme",
                workset_id=ws_id,
                outcome="submitted",
                sentinel=sentinels.IN_PROGRESS,
                findings=[],
            )
        )
    return folder


@pytest.mark.parametrize("case", list(SENTINEL_CASES))
async def test_sentinels_follow_the_workset_of_a_dropped_folder(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore, case: str
) -> None:
    payload, sentinel, message = SENTINEL_CASES[case]
    ws_id, _ = await submit_and_get_event(pool, s3lab.spec())
    folder = await dropped_from_folder(pool, s3lab, ws_id, "run1")
    handler = partial(keep_sentinel, pool=lambda: pool, store=lambda: store)
    event = new_envelope(payload, tenant_id="acme", region="us-west-2", workset_id=ws_id)
    await handler(event, DELIVERY)
    stamp = event.occurred_at.isoformat()
    # Daylily's format: a timestamp, and for daylily.error a tab and the message on one line.
    assert s3lab.get(folder + sentinel).decode() == (stamp if message is None else f"{stamp}\t{message}")
    others = {sentinels.COMPLETE, sentinels.ERROR} - {sentinel}
    assert not any(s3lab.exists(folder + other) for other in others)
    s3lab.client.delete_object(Bucket=s3lab.bucket, Key=folder + sentinel)
    await handler(event, DELIVERY)  # redelivery: the inbox says it is done
    assert not s3lab.exists(folder + sentinel)
    async with pool.acquire() as conn:
        drop = await IntakeRepository(conn).drop_for_workset(ws_id)
    assert drop is not None and drop.sentinel == sentinel
    # A workset that did not come from a folder: nothing to write.
    other_id, _ = await submit_and_get_event(pool, s3lab.spec("other"))
    await handler(new_envelope(payload, tenant_id="acme", region="us-west-2", workset_id=other_id), DELIVERY)
    listing = s3lab.client.list_objects_v2(Bucket=s3lab.bucket, Prefix="daylily_monitoring/")
    assert [o["Key"] for o in listing.get("Contents", [])] == []


async def _last_event(pool: asyncpg.Pool, ws_id: str, event_type: str) -> Envelope:
    found = [e for e in await outbox(pool) if e["workset_id"] == ws_id and e["type"] == event_type]
    assert found, f"no {event_type} for {ws_id}"
    return decode_envelope(json.dumps(found[-1]).encode())


async def test_a_non_retryable_failure_of_a_dropped_workset_ends_with_daylily_error_holding_the_diagnosis(
    pool: asyncpg.Pool, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    """The real handlers in turn, each on the event the one before committed: diagnostics classifies the
    failure, the scheduler dead-letters it (not_retryable), the validator writes Daylily's daylily.error."""
    from services.diagnostics.handlers import diagnose_failure
    from services.scheduler.handlers import decide_retry, retry_policy
    from stamen.domain.lifecycle import WorksetState as S
    from stamen.events.types import WorksetFailed

    ws_id, _ = await submit_and_get_event(pool, s3lab.spec())
    folder = await dropped_from_folder(pool, s3lab, ws_id, "run9")
    log = (
        "Detecting adapter sequence for read1...\n"
        "ERROR: sequence and quality have different length:\n"
        "@A00123:8:H7KJ2DSXX:1:1101:10004:1000 1:N:0:ACGT\n"
    )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id, for_update=True)
        for state in (S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING):
            ws.transition(state, actor="t")
        ws.attempt = 1
        # The step's log tail is in step_runs; the event points at it (claim check).
        claim = await uow.step_runs.record_submitting(
            workset_id=ws_id, attempt=1, step="qc", step_index=0, cluster="local", holder="t"
        )
        await uow.connection.execute(
            "UPDATE step_runs SET state = 'failed', log_tail = $2 WHERE id = $1", claim.step_run_id, log
        )
        failed = WorksetFailed(attempt=1, step="qc", step_run_id=claim.step_run_id, exit_code=255)
        ws.transition(S.FAILED, actor="scheduler", reason="step qc failed", event=failed)
        await uow.worksets.save(ws)
        await uow.commit()
    await idempotent("diagnostics-failed", lambda: pool, diagnose_failure)(
        await _last_event(pool, ws_id, "workset.failed"), DELIVERY
    )
    diagnosed = await _last_event(pool, ws_id, "workset.diagnosed")
    await idempotent(
        "scheduler-diagnosed", lambda: pool, partial(decide_retry, policy=retry_policy(Settings()))
    )(diagnosed, DELIVERY)
    dead = await _last_event(pool, ws_id, "workset.dead_lettered")
    assert isinstance(dead.payload, WorksetDeadLettered)
    code = dead.payload.code
    assert (dead.payload.reason, dead.payload.retryable, code) == ("not_retryable", False, "WS-DAT-002")

    await keep_sentinel(dead, DELIVERY, pool=lambda: pool, store=lambda: store)
    stamp, message = s3lab.get(folder + sentinels.ERROR).decode().split("\t")
    assert stamp == dead.occurred_at.isoformat()
    assert message.startswith(
        "failed for good (not_retryable) after 1 attempt: WS-DAT-002 FASTQ sequence/quality length mismatch "
        'in step qc; evidence: "ERROR: sequence and quality have different length:"'
    ), message
    assert "fix: Locate the bad record" in message  # the catalog's first remediation step
    async with pool.acquire() as conn:
        drop = await IntakeRepository(conn).drop_for_workset(ws_id)
    assert drop is not None and drop.sentinel == sentinels.ERROR
