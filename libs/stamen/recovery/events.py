"""Events rebuilt from what PostgreSQL holds, for a reconciler whose event's outbox row is gone (published).

Each keeps the id of the event it stands for (from `workset_history` or the diagnosis row), so the
consumer's inbox claim is the same whichever of the two is handled first. Pure code: no I/O.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from stamen.domain.workset import Workset
from stamen.events.envelope import Envelope
from stamen.events.types import EventPayload, WorksetDiagnosed, WorksetFailed, WorksetSubmitted

# What the executor's state was, by the state its step run ended in (the executors' own words are not
# stored; these are the ones diagnostics reads).
_NATIVE_STATES = {"lost": "LOST", "timeout": "TIMEOUT", "out_of_memory": "OUT_OF_MEMORY", "node_fail": "NODE_FAIL",
                  "preempted": "PREEMPTED", "cancelled": "CANCELLED"}  # fmt: skip


def _envelope(ws: Workset, event_id: uuid.UUID, payload: EventPayload) -> Envelope:
    return Envelope(
        id=event_id,
        type=payload.event_type,
        occurred_at=datetime.now(UTC),
        workset_id=ws.id,
        tenant_id=ws.tenant_id,
        region=ws.region,
        correlation_id=ws.correlation_id,
        schema_version=payload.schema_version,
        payload=payload,
    )


def submitted_event(ws: Workset, event_id: uuid.UUID) -> Envelope:
    samples = ws.spec.get("samples")
    count = len(samples) if isinstance(samples, list) else 0
    return _envelope(ws, event_id, WorksetSubmitted(name=ws.name, source="reconciler", sample_count=count))


def failed_event(
    ws: Workset,
    event_id: uuid.UUID,
    *,
    step_run_id: int | None,
    step: str | None,
    exit_code: int | None,
    signal: int | None,
    step_state: str | None,
    reason: str,
) -> Envelope:
    payload = WorksetFailed(
        attempt=ws.attempt,
        step=step,
        step_run_id=step_run_id,
        exit_code=exit_code,
        signal=signal,
        native_state=_NATIVE_STATES.get(step_state or "", ""),
        reason=reason,
    )
    return _envelope(ws, event_id, payload)


def diagnosed_event(ws: Workset, event_id: uuid.UUID, *, attempt: int, code: str, retry_class: str,
                    retryable: bool) -> Envelope:  # fmt: skip
    payload = WorksetDiagnosed(attempt=attempt, code=code, retry_class=retry_class, retryable=retryable)
    return _envelope(ws, event_id, payload)
