"""workset.failed -> workset.diagnosed: why it failed, in words a lab engineer can act on."""

from __future__ import annotations

from typing import Any

import structlog

from stamen.diagnostics import Candidate, classify_error, format_diagnostic_report
from stamen.events.envelope import Envelope
from stamen.events.types import WorksetDiagnosed, WorksetFailed
from stamen.service.poison import payload_of, workset_id_of
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


def candidate_doc(c: Candidate) -> dict[str, Any]:
    return {
        "code": c.code,
        "name": c.name,
        "category": c.category.value,
        "severity": c.severity.value,
        "retry_class": c.retry_class.value,
        "score": round(c.score, 3),
        "evidence": [e.text for e in c.evidence_lines[:5]],
        "facts": list(c.matched_facts),
    }


async def diagnose_failure(uow: UnitOfWork, event: Envelope) -> None:
    failed = payload_of(event, WorksetFailed)
    workset_id = workset_id_of(event)
    # The log tail is in PostgreSQL (claim check); a failure without a step run has only its reason.
    log_tail = await uow.step_runs.log_tail(workset_id, failed.step_run_id) if failed.step_run_id else None
    diagnosis = classify_error(
        log_tail if log_tail is not None else failed.reason,
        exit_code=failed.exit_code,
        signal=failed.signal,
        slurm_state=failed.native_state or None,
    )
    top = diagnosis.top
    candidates = [candidate_doc(c) for c in diagnosis.candidates[:5]]
    report = format_diagnostic_report(diagnosis, "text")
    ws = await uow.worksets.get(workset_id)
    diagnosed = ws.event(
        WorksetDiagnosed(
            attempt=failed.attempt,
            code=top.code,
            retry_class=top.retry_class.value,
            retryable=top.retry_class.is_retryable,
        ),
        cause=event,
    )
    await uow.diagnoses.record(
        workset_id=ws.id,
        attempt=failed.attempt,
        event_id=diagnosed.id,
        code=top.code,
        retry_class=top.retry_class.value,
        retryable=top.retry_class.is_retryable,
        step=failed.step,
        candidates=candidates,
        report=report,
    )
    log.info(
        "diagnostics.diagnosed", code=top.code, retry_class=top.retry_class.value, attempt=failed.attempt
    )
