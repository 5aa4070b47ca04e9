"""Event handlers and timer handlers of the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

from stamen.diagnostics import RetryClass
from stamen.domain.lifecycle import WorksetState
from stamen.events.envelope import Envelope
from stamen.events.types import RetryScheduled, WorksetDeadLettered, WorksetDiagnosed, WorksetQueued
from stamen.retry import BackoffPolicy, GiveUp, GiveUpReason, MemoryEscalation, decide_retry
from stamen.settings import Settings
from stamen.store.scheduling import DueTimer
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
S = WorksetState
ACTOR = "scheduler"


class RetryPolicy:
    """Turns a diagnosis into retry_wait (with a durable timer), failed, or dead_lettered."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.enable_retry
        self.backoff = BackoffPolicy(
            initial_seconds=settings.retry_initial_seconds,
            factor=settings.retry_factor,
            cap_seconds=settings.retry_cap_seconds,
        )
        self.memory = MemoryEscalation(
            growth=settings.retry_memory_growth, max_multiplier=settings.retry_memory_max_multiplier
        )

    async def on_diagnosed(self, uow: UnitOfWork, event: Envelope) -> None:
        diagnosed = event.payload
        assert isinstance(diagnosed, WorksetDiagnosed) and event.workset_id is not None
        ws = await uow.worksets.get(event.workset_id, for_update=True)
        if ws.state is not S.FAILED or diagnosed.attempt != ws.attempt:
            log.info("scheduler.diagnosis_stale", state=ws.state.value, attempt=diagnosed.attempt)
            return
        if not self.enabled:
            log.info("scheduler.retry_disabled", code=diagnosed.code)
            return
        decision = decide_retry(
            RetryClass(diagnosed.retry_class),
            ws.retry_count + 1,
            ws.max_retries,
            self.backoff,
            memory=self.memory,
        )
        if isinstance(decision, GiveUp):
            if decision.reason is GiveUpReason.EXHAUSTED:
                ws.transition(
                    S.DEAD_LETTERED,
                    actor=ACTOR,
                    reason=decision.detail,
                    event=WorksetDeadLettered(reason=decision.detail, attempts=ws.attempt),
                    cause=event,
                )
                await uow.dead_letters.park(ws.id, ws.tenant_id, decision.detail, ws.attempt, diagnosed.code)
            # Non-retryable: the workset stays failed, with the diagnosis saying why.
            await uow.worksets.save(ws)
            log.info("scheduler.no_retry", reason=decision.reason.value, code=diagnosed.code)
            return
        due_at = datetime.now(UTC) + timedelta(seconds=decision.delay_seconds)
        ws.retry_count += 1
        ws.memory_multiplier = max(ws.memory_multiplier, decision.memory_multiplier)
        ws.transition(
            S.RETRY_WAIT,
            actor=ACTOR,
            reason=f"{diagnosed.code} is {diagnosed.retry_class}: retry {ws.retry_count}/{ws.max_retries} "
            f"in {decision.delay_seconds:.1f}s",
            event=RetryScheduled(attempt=ws.attempt + 1, due_at=due_at, delay_seconds=decision.delay_seconds),
            cause=event,
        )
        await uow.worksets.save(ws)
        await uow.scheduling.add_timer(ws.id, "retry", due_at, {"attempt": ws.attempt + 1})


async def fire_retry(uow: UnitOfWork, timer: DueTimer) -> None:
    ws = await uow.worksets.get(timer.workset_id, for_update=True)
    if ws.state is not S.RETRY_WAIT:
        return  # cancelled meanwhile
    ws.transition(
        S.QUEUED,
        actor=ACTOR,
        reason=f"retry timer due at {timer.due_at:%H:%M:%S}",
        event=WorksetQueued(priority=ws.priority, attempt=ws.attempt + 1),
    )
    await uow.worksets.save(ws)
