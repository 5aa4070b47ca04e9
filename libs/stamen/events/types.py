"""One pydantic model per event type. An event says what happened; others react to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class EventPayload(BaseModel):
    """Base for payloads: `event_type` is the wire name and subject suffix, `version` its schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class WorksetSubmitted(EventPayload):
    event_type = "workset.submitted"
    name: str
    source: str = Field(description="api | nats | s3 | cli")
    spec: dict[str, Any]


class WorksetValidated(EventPayload):
    event_type = "workset.validated"
    warnings: list[dict[str, Any]] = []
    estimate: dict[str, Any] | None = None


class WorksetRejected(EventPayload):
    event_type = "workset.rejected"
    findings: list[dict[str, Any]]


class WorksetQueued(EventPayload):
    event_type = "workset.queued"
    priority: str = "normal"
    attempt: int = 1


class WorksetScheduled(EventPayload):
    event_type = "workset.scheduled"
    cluster: str
    reason: str
    scores: dict[str, float] = {}


class WorksetStarted(EventPayload):
    event_type = "workset.started"
    cluster: str
    attempt: int = 1


class StepStarted(EventPayload):
    event_type = "workset.step_started"
    step: str
    attempt: int = 1


class StepCompleted(EventPayload):
    event_type = "workset.step_completed"
    step: str
    attempt: int = 1
    resources: dict[str, float] = {}


class WorksetCompleted(EventPayload):
    event_type = "workset.completed"
    attempt: int = 1
    outputs: dict[str, str] = {}


class WorksetFailed(EventPayload):
    event_type = "workset.failed"
    attempt: int = 1
    step: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    native_state: str = ""  # the executor's own word, e.g. Slurm's OUT_OF_MEMORY
    reason: str = ""
    log_tail: str = ""


class WorksetDiagnosed(EventPayload):
    event_type = "workset.diagnosed"
    attempt: int = 1
    code: str
    retry_class: str
    retryable: bool
    candidates: list[dict[str, Any]]
    report: str = ""


class RetryScheduled(EventPayload):
    event_type = "workset.retry_scheduled"
    attempt: int
    due_at: datetime
    delay_seconds: float


class WorksetDeadLettered(EventPayload):
    event_type = "workset.dead_lettered"
    reason: str
    attempts: int


class WorksetCancelled(EventPayload):
    event_type = "workset.cancelled"
    cancelled_by: str
    reason: str = ""


class WorksetArchived(EventPayload):
    event_type = "workset.archived"
    archived_by: str


class RegionHealthChanged(EventPayload):
    event_type = "region.health_changed"
    status: str = Field(description="healthy | degraded | down")
    latency_ms: float | None = None
    detail: str = ""


class CustomerCreated(EventPayload):
    event_type = "customer.created"
    customer_id: str
    customer_name: str
    email: str


class NotificationSent(EventPayload):
    event_type = "notification.sent"
    channel: str
    about_event_id: str
    reference: str = ""


class NotificationFailed(EventPayload):
    event_type = "notification.failed"
    channel: str
    about_event_id: str
    error: str


_ALL: tuple[type[EventPayload], ...] = (
    WorksetSubmitted,
    WorksetValidated,
    WorksetRejected,
    WorksetQueued,
    WorksetScheduled,
    WorksetStarted,
    StepStarted,
    StepCompleted,
    WorksetCompleted,
    WorksetFailed,
    WorksetDiagnosed,
    RetryScheduled,
    WorksetDeadLettered,
    WorksetCancelled,
    WorksetArchived,
    RegionHealthChanged,
    CustomerCreated,
    NotificationSent,
    NotificationFailed,
)

EVENT_TYPES: dict[str, type[EventPayload]] = {p.event_type: p for p in _ALL}
