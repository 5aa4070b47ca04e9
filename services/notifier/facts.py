"""What a message says about an event, read from PostgreSQL: events carry ids and small facts; the
workset, its validation, diagnosis, retry timer, actuals and history are read here."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from stamen.diagnostics import UnknownErrorCodeError, get_entry
from stamen.diagnostics.codes import Severity
from stamen.events.envelope import Envelope
from stamen.events.types import (
    RegionHealthChanged,
    RetryScheduled,
    WorksetCompleted,
    WorksetDeadLettered,
    WorksetStarted,
)
from stamen.notifications.kinds import DEFAULT_SEVERITY, EVENT_KINDS, OPERATORS, Kind, rank
from stamen.notifications.messages import DiagnosisFacts, Facts, WorksetFacts
from stamen.notifications.repository import FactsRepository

REQUEUED_FROM = ("failed", "dead_lettered")
REGION_SEVERITY = {"down": Severity.CRITICAL, "degraded": Severity.WARNING, "healthy": Severity.INFO}


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else None


async def workset_facts(repo: FactsRepository, event: Envelope) -> Facts | None:
    """The facts of a workset event, or None when it is not something people are told about (a
    workset.queued that is not an operator's requeue) or the workset is gone."""
    assert event.workset_id is not None
    kind = EVENT_KINDS[event.type]
    row = await repo.workset(event.workset_id)
    if row is None:
        return None
    ws = WorksetFacts(
        id=row["id"],
        name=row["name"],
        tenant_id=row["tenant_id"],
        state=row["state"],
        attempt=row["attempt"],
        retry_count=row["retry_count"],
        max_retries=row["max_retries"],
        pipeline=row["pipeline"],
        cluster=row["cluster"],
    )
    detail: dict[str, Any] = {}
    diagnosis: DiagnosisFacts | None = None
    severity = DEFAULT_SEVERITY[kind]
    payload = event.payload
    if kind is Kind.SUBMITTED:
        detail = {"source": getattr(payload, "source", "?"), "samples": row["samples"]}
    elif kind in (Kind.VALIDATED, Kind.REJECTED):
        validation = await repo.validation(ws.id) or {}
        findings = validation.get("findings") or getattr(payload, "findings", [])
        errors = [f for f in findings if f.get("severity", "error") == "error"]
        if kind is Kind.REJECTED:
            detail = {"findings": errors or findings}
        else:
            detail = {"estimate": validation.get("estimate"), "warnings": len(findings) - len(errors)}
    elif kind is Kind.STARTED:
        assert isinstance(payload, WorksetStarted)
        detail = {"cluster": payload.cluster, "attempt": payload.attempt}
    elif kind is Kind.COMPLETED:
        assert isinstance(payload, WorksetCompleted)
        actuals = await repo.actuals(ws.id) or {}
        estimate = ((await repo.validation(ws.id)) or {}).get("estimate") or {}
        outputs = dict(payload.outputs)
        if row["export_uri"]:
            outputs.setdefault("export", row["export_uri"])
        detail = {
            "cost_usd": actuals.get("cost_usd"),
            "estimate_usd": estimate.get("cost_usd_median"),
            "wall_seconds": actuals.get("wall_seconds"),
            "attempts": actuals.get("attempts", payload.attempt),
            "outputs": outputs,
            "had_failures": await repo.has_diagnoses(ws.id),
        }
    elif kind is Kind.RETRYING:
        assert isinstance(payload, RetryScheduled)
        diagnosis = await _diagnosis(repo, ws.id, payload.attempt - 1)
        retry = await repo.retry_number(event.id)
        detail = {
            "failed_attempt": payload.attempt - 1,
            "next_attempt": payload.attempt,
            "retry": ws.retry_count if retry is None else retry,
            "max_retries": ws.max_retries,
            "due_at": _when(payload.due_at),
        }
    elif kind is Kind.FAILED:
        assert isinstance(payload, WorksetDeadLettered)
        # `attempt` names the attempt whose diagnosis ended it; events from before it existed have only
        # `attempts`, the count of runs.
        diagnosis = await _diagnosis(repo, ws.id, payload.attempt or payload.attempts)
        parked = await repo.dead_letter(ws.id) or {}
        detail = {
            "reason": payload.reason,
            "attempts": payload.attempts,
            "detail": payload.detail or str(parked.get("detail") or ""),
        }
        if (
            diagnosis is not None
            and diagnosis.severity is not None
            and rank(diagnosis.severity) > rank(severity)
        ):
            severity = diagnosis.severity
    elif kind in (Kind.CANCELLED, Kind.REQUEUED):
        change = await repo.transition(event.id) or {}
        if kind is Kind.REQUEUED and change.get("from_state") not in REQUEUED_FROM:
            return None  # the first queueing (validated) or a retry's (retrying) is told elsewhere
        detail = {
            "actor": getattr(payload, "cancelled_by", None) or change.get("actor", "?"),
            "reason": change.get("reason") or getattr(payload, "reason", ""),
            "attempt": getattr(payload, "attempt", None),
        }
    return Facts(
        kind=kind,
        severity=severity,
        event_id=str(event.id),
        event_type=event.type,
        occurred_at=event.occurred_at,
        owner=event.tenant_id,
        region=event.region,
        workset=ws,
        diagnosis=diagnosis,
        detail=detail,
        thread=ws.id,
    )


async def _diagnosis(repo: FactsRepository, workset_id: str, attempt: int) -> DiagnosisFacts | None:
    row = await repo.diagnosis(workset_id, attempt)
    if row is None:
        return None
    top = row["candidates"][0] if row["candidates"] else {}
    try:
        entry = get_entry(row["code"])
        name, summary, remediation, severity = (
            entry.name,
            entry.summary,
            list(entry.remediation),
            entry.severity,
        )
    except UnknownErrorCodeError:
        name, summary, remediation, severity = top.get("name", row["code"]), "", [], None
    # A diagnosis that stores its own remediation (a column beside the code) wins over the catalog's.
    stored = row.get("remediation")
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except json.JSONDecodeError:
            stored = [stored]
    if isinstance(stored, list) and stored:
        remediation = [str(step) for step in stored]
    return DiagnosisFacts(
        code=row["code"],
        name=name,
        summary=summary,
        retry_class=row["retry_class"],
        attempt=row["attempt"],
        evidence=[str(line) for line in top.get("evidence", [])],
        remediation=remediation,
        severity=severity,
    )


def region_facts(event: Envelope) -> Facts:
    payload = event.payload
    assert isinstance(payload, RegionHealthChanged)
    return Facts(
        kind=Kind.REGION_HEALTH,
        severity=REGION_SEVERITY.get(payload.status, Severity.WARNING),
        event_id=str(event.id),
        event_type=event.type,
        occurred_at=event.occurred_at,
        owner=OPERATORS,
        region=event.region,
        detail={
            "status": payload.status,
            "previous": payload.previous,
            "latency_ms": payload.latency_ms,
            "detail": payload.detail,
            "actor": payload.actor,
        },
        thread=f"region:{event.region}",
    )


async def drained_facts(repo: FactsRepository, event: Envelope) -> Facts:
    cluster = str(getattr(event.payload, "cluster", "?"))
    return Facts(
        kind=Kind.CLUSTER_DRAINED,
        severity=DEFAULT_SEVERITY[Kind.CLUSTER_DRAINED],
        event_id=str(event.id),
        event_type=event.type,
        occurred_at=event.occurred_at,
        owner=OPERATORS,
        region=event.region,
        detail={
            "cluster": cluster,
            "actor": getattr(event.payload, "drained_by", "?"),
            "running": await repo.running_on(cluster),
        },
        thread=f"cluster:{cluster}",
    )


# Roll-up alerts have no event of their own: one id per alert window, so a window alerts once.
_ROLLUP = uuid.UUID("5d3c0e7a-5c51-4f0b-8d0e-2f3a9b7c6e10")


async def pile_up_facts(
    repo: FactsRepository, event: Envelope, *, threshold: int, window_minutes: int, now: datetime
) -> Facts | None:
    pressure = await repo.dead_letter_pressure(window_minutes)
    if pressure["recent"] < threshold:
        return None
    window = int(now.timestamp() // (window_minutes * 60))
    return Facts(
        kind=Kind.DEAD_LETTERS_PILING_UP,
        severity=DEFAULT_SEVERITY[Kind.DEAD_LETTERS_PILING_UP],
        event_id=str(uuid.uuid5(_ROLLUP, f"dead-letters:{window_minutes}:{window}")),
        event_type=event.type,
        occurred_at=now,
        owner=OPERATORS,
        region=event.region,
        detail={
            "count": pressure["recent"],
            "waiting": pressure["waiting"],
            "window_minutes": window_minutes,
            "threshold": threshold,
            "by_tenant": pressure["by_tenant"],
            "by_code": pressure["by_code"],
        },
        thread="dead-letters",
    )
