"""One pydantic model per event type. An event says what happened; others react to it.

Events carry identities and small facts, never documents (claim check): the spec, the validation
findings and estimate, a step's log tail and a diagnosis report stay in PostgreSQL, where consumers read
them by the event's `workset_id` (and `step_run_id`, `attempt`). So no event grows with its workset:
every event stays under `EVENT_MAX_BYTES` whatever the input (tests/bus/test_event_size.py), far below
NATS's max payload. Free text is clipped to `SHORT_TEXT` characters.

A payload whose shape changes gets a new `schema_version`; `UPCASTERS` turns what older producers
wrote (still in the stream during an upgrade) into the current shape.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

EVENT_MAX_BYTES = 4 * 1024
SHORT_TEXT = 500
# The distinct finding codes a rejection names (the catalogue has ~80; the full findings are in PostgreSQL).
MAX_CODES = 20


def _clip(value: object) -> object:
    if isinstance(value, str) and len(value) > SHORT_TEXT:
        return value[: SHORT_TEXT - 1] + "…"
    return value


ShortText = Annotated[str, BeforeValidator(_clip)]


class EventPayload(BaseModel):
    """Base for payloads: `event_type` is the wire name and subject suffix, `version` its schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class WorksetSubmitted(EventPayload):
    """The spec itself is `worksets.spec`."""

    event_type = "workset.submitted"
    schema_version = 2
    name: ShortText
    source: str = Field(description="api | nats | s3 | cli")
    sample_count: int = Field(ge=0)


class WorksetValidated(EventPayload):
    """The findings and the estimate are in `workset_validations`."""

    event_type = "workset.validated"
    schema_version = 2
    warning_count: int = 0
    cost_usd_median: float | None = None


class WorksetRejected(EventPayload):
    """The findings are in `workset_validations`; `codes` are the distinct error codes, at most MAX_CODES."""

    event_type = "workset.rejected"
    schema_version = 2
    error_count: int
    warning_count: int = 0
    codes: Annotated[list[str], Field(max_length=MAX_CODES)] = []


class WorksetQueued(EventPayload):
    event_type = "workset.queued"
    priority: str = "normal"
    attempt: int = 1


class WorksetScheduled(EventPayload):
    event_type = "workset.scheduled"
    cluster: str
    reason: ShortText
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
    """The step's log tail is `step_runs.log_tail` of `step_run_id` (None: the failure had no step run,
    and `reason` says all there is)."""

    event_type = "workset.failed"
    schema_version = 2
    attempt: int = 1
    step: str | None = None
    step_run_id: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    native_state: str = ""  # the executor's own word, e.g. Slurm's OUT_OF_MEMORY
    reason: ShortText = ""


class WorksetDiagnosed(EventPayload):
    """The ranked candidates and the report are the `diagnoses` row of (workset_id, attempt)."""

    event_type = "workset.diagnosed"
    schema_version = 2
    attempt: int = 1
    code: str
    retry_class: str
    retryable: bool


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
    reason: str = Field(
        description="retries_exhausted | not_retryable | retries_disabled (stamen.retry.GiveUpReason)"
    )
    attempts: int = Field(description="runs so far, all attempts (requeues included)")
    attempt: int | None = Field(default=None, description="the attempt whose diagnosis ended it")
    code: str | None = Field(default=None, description="that diagnosis' error code, e.g. WS-DAT-002")
    retry_class: str | None = None
    retryable: bool | None = Field(default=None, description="whether the diagnosis' class is retryable")
    detail: str = Field(default="", max_length=500, description="one sentence: why stamen stopped")


class WorksetCancelled(EventPayload):
    event_type = "workset.cancelled"
    cancelled_by: str
    reason: ShortText = ""


class WorksetArchived(EventPayload):
    event_type = "workset.archived"
    archived_by: str


class RegionHealthChanged(EventPayload):
    """Published under the platform tenant (`stamen.bus.subjects.PLATFORM_TENANT`); `region` of the
    envelope is the region whose health changed."""

    event_type = "region.health_changed"
    status: str = Field(description="healthy | degraded | down")
    latency_ms: float | None = None
    detail: ShortText = ""
    previous: str | None = Field(default=None, description="the status before; None for a new region")
    actor: str = Field(default="regions", description="regions (probes) or the operator who forced it")


class ClusterDrained(EventPayload):
    """An operator drained a cluster: it takes no new worksets; those running there finish."""

    event_type = "cluster.drained"
    cluster: str
    drained_by: str


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
    error: ShortText


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
    ClusterDrained,
    CustomerCreated,
    NotificationSent,
    NotificationFailed,
)

EVENT_TYPES: dict[str, type[EventPayload]] = {p.event_type: p for p in _ALL}


def _findings_counts(payload: dict[str, Any], key: str) -> list[dict[str, Any]]:
    found = payload.pop(key, None)
    return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []


def _submitted_v1(payload: dict[str, Any]) -> dict[str, Any]:
    spec = payload.pop("spec", None)
    samples = spec.get("samples") if isinstance(spec, dict) else None
    return {**payload, "sample_count": len(samples) if isinstance(samples, list) else 0}


def _validated_v1(payload: dict[str, Any]) -> dict[str, Any]:
    warnings = _findings_counts(payload, "warnings")
    estimate = payload.pop("estimate", None)
    median = estimate.get("cost_usd_median") if isinstance(estimate, dict) else None
    return {
        **payload,
        "warning_count": len(warnings),
        "cost_usd_median": median if isinstance(median, int | float) else None,
    }


def _rejected_v1(payload: dict[str, Any]) -> dict[str, Any]:
    findings = _findings_counts(payload, "findings")
    errors = [f for f in findings if f.get("severity", "error") == "error"]
    codes = list(dict.fromkeys(str(f.get("code")) for f in errors))[:MAX_CODES]
    return {
        **payload,
        "error_count": len(errors),
        "warning_count": len(findings) - len(errors),
        "codes": codes,
    }


def _without(*keys: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda payload: {k: v for k, v in payload.items() if k not in keys}


# (event type, older schema_version) -> the payload in the current shape. Documents that events no longer
# carry are dropped: consumers read them from PostgreSQL either way.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("workset.submitted", 1): _submitted_v1,
    ("workset.validated", 1): _validated_v1,
    ("workset.rejected", 1): _rejected_v1,
    ("workset.failed", 1): _without("log_tail"),
    ("workset.diagnosed", 1): _without("candidates", "report"),
}
