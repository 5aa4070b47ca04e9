"""workset.submitted -> validating -> queued (validated, with the estimate) or rejected (with findings)."""

from __future__ import annotations

import structlog
from stamen.domain.lifecycle import WorksetState
from stamen.events.envelope import Envelope
from stamen.events.types import WorksetQueued, WorksetRejected, WorksetValidated
from stamen.store.unit_of_work import UnitOfWork

from services.validator.checks import check_spec

log = structlog.get_logger(__name__)
ACTOR = "validator"


async def validate_submitted(uow: UnitOfWork, event: Envelope) -> None:
    assert event.workset_id is not None
    ws = await uow.worksets.get(event.workset_id, for_update=True)
    if ws.state is not WorksetState.SUBMITTED:
        # Cancelled meanwhile, or already handled by an earlier delivery: nothing to do.
        log.info("validator.skipped", state=ws.state.value)
        return
    ws.transition(WorksetState.VALIDATING, actor=ACTOR, reason="validation started", cause=event)
    result = check_spec(ws.spec, tenant_id=ws.tenant_id)
    if result.ok:
        ws.transition(
            WorksetState.QUEUED,
            actor=ACTOR,
            reason=f"valid ({len(result.warnings)} warnings)",
            event=WorksetValidated(warnings=result.warnings, estimate=result.estimate),
            cause=event,
        )
        ws.event(WorksetQueued(priority=ws.priority), cause=event)
    else:
        ws.transition(
            WorksetState.REJECTED,
            actor=ACTOR,
            reason=f"{len(result.errors)} validation errors: "
            + "; ".join(e["code"] for e in result.errors[:5]),
            event=WorksetRejected(findings=result.errors + result.warnings),
            cause=event,
        )
    await uow.worksets.save(ws)
    log.info("validator.done", outcome=ws.state.value, errors=len(result.errors))
