"""Event handlers and timer handlers of the scheduler: thin adapters over the retry commands. Like every
service's handlers, each is a function of (unit of work, message) and keyword-only dependencies, which
the wiring binds (functools.partial)."""

from __future__ import annotations

import structlog

from stamen.diagnostics import RetryClass
from stamen.events.envelope import Envelope
from stamen.events.types import WorksetDiagnosed
from stamen.retry import RetryPolicy
from stamen.retry_commands import record_failure, reset_for_retry
from stamen.service.poison import payload_of, workset_id_of
from stamen.settings import Settings
from stamen.store.timers import DueTimer
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
ACTOR = "scheduler"


def retry_policy(settings: Settings) -> RetryPolicy | None:
    """The policy decide_retry applies; None when retries are off (STAMEN_ENABLE_RETRY=false)."""
    return RetryPolicy.from_settings(settings) if settings.enable_retry else None


async def decide_retry(uow: UnitOfWork, event: Envelope, *, policy: RetryPolicy | None) -> None:
    """workset.diagnosed -> retry_wait (with a durable timer) or dead_lettered (stamen will not retry it)."""
    diagnosed = payload_of(event, WorksetDiagnosed)
    outcome = await record_failure(
        uow,
        workset_id_of(event),
        attempt=diagnosed.attempt,
        code=diagnosed.code,
        retry_class=RetryClass(diagnosed.retry_class),
        policy=policy,
        actor=ACTOR,
        cause=event,
    )
    log.info(
        "scheduler.failure_recorded",
        workset_id=outcome.workset_id,
        attempt=diagnosed.attempt,
        code=diagnosed.code,
        action=outcome.action,
        detail=outcome.detail,
    )


async def fire_retry(uow: UnitOfWork, timer: DueTimer) -> None:
    ws = await reset_for_retry(
        uow, timer.workset_id, actor=ACTOR, reason=f"retry timer due at {timer.due_at:%H:%M:%S}"
    )
    if ws is None:
        log.info("scheduler.retry_skipped", workset_id=timer.workset_id, reason="no longer waiting to retry")
