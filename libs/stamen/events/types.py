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
    """The workset failed for good: stamen will not run it again unless a person requeues it.

    The single "final failure" event, whatever the path (docs/retry-recovery.md). Small facts only:
    consumers read the diagnosis (evidence, remediation) from PostgreSQL by (workset_id, attempt).
    The fields after `attempts` were added later, so events written before carry their defaults.
    """

    event_type = "workset.dead_lettered"
    reason: str = Field(description="retries_exhausted | not_retryable | retries_disabled (stamen.retry.GiveUpReason)")
    attempts: int = Field(description="runs so far, all attempts (requeues included)")
    attempt: int | None = Field(default=None, description="the attempt whose diagnosis ended it")
    code: str | None = Field(default=None, description="that diagnosis' error code, e.g. WS-DAT-002")
    retry_class: str | None = None
    retryable: bool | None = Field(default=None, description="whether the diagnosis' class is retryable")
    detail: str = Field(default="", max_length=500, description="one sentence: why stamen stopped")


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
