"""The Workset aggregate: its state, its checked transitions, the events they cause."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stamen.domain.lifecycle import INITIAL_STATE, WorksetState, check_transition
from stamen.errors import CodedError
from stamen.events.envelope import Envelope, new_envelope
from stamen.events.types import EventPayload, WorksetSubmitted

# Tenant ids become NATS subject tokens and S3 prefixes, so they are kept to a safe alphabet. The one
# rule: the API's models, the validator and the customers table's CHECK use it (a test keeps the CHECK so).
TENANT_ID_REGEX = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TENANT_ID_PATTERN = re.compile(TENANT_ID_REGEX)


class InvalidTenantId(CodedError, ValueError):
    code = "TENANT_ID_INVALID"


def check_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidTenantId(
            f"tenant id {tenant_id!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return tenant_id


def spec_fingerprint(spec: dict[str, Any]) -> str:
    """What an idempotency key promises is the same: the spec, as canonical JSON (key order does not count)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sample_count(spec: dict[str, Any]) -> int:
    samples = spec.get("samples")
    return len(samples) if isinstance(samples, list) else 0


@dataclass(frozen=True)
class Transition:
    from_state: WorksetState | None
    to_state: WorksetState
    actor: str
    reason: str
    event_id: uuid.UUID | None
    at: datetime


@dataclass
class Workset:
    id: str
    tenant_id: str
    name: str
    state: WorksetState
    region: str
    correlation_id: uuid.UUID
    priority: str = "normal"
    spec: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    idempotency_fingerprint: str | None = None  # spec_fingerprint of the submitted spec, with a key
    # Scheduling: the cluster it was placed on, which attempt is current, retries used so far.
    cluster: str | None = None
    placement_reason: str | None = None
    placement_scores: dict[str, float] | None = None
    attempt: int = 0
    retry_count: int = 0
    max_retries: int = 3
    cancel_requested_by: str | None = None
    max_duration_seconds: int | None = None
    memory_multiplier: float = 1.0
    # The version read from the store; 0 means not stored yet. The store's update only succeeds
    # if the row still has this version (optimistic concurrency).
    version: int = 0
    # What the store holds of the columns a save may change, as of `version` (set by the store when it reads
    # or writes the row; None: unknown, a save writes them all). A save writes only those that differ.
    stored: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)
    pending_transitions: list[Transition] = field(default_factory=list)
    pending_events: list[Envelope] = field(default_factory=list)

    @classmethod
    def submit(
        cls,
        *,
        tenant_id: str,
        name: str,
        region: str,
        spec: dict[str, Any],
        source: str,
        actor: str,
        priority: str = "normal",
        idempotency_key: str | None = None,
        workset_id: str | None = None,
    ) -> Workset:
        check_tenant_id(tenant_id)
        ws_id = workset_id or f"ws-{uuid.uuid4().hex[:16]}"
        event = new_envelope(
            WorksetSubmitted(name=name, source=source, sample_count=_sample_count(spec)),
            tenant_id=tenant_id,
            region=region,
            workset_id=ws_id,
        )
        ws = cls(
            id=ws_id,
            tenant_id=tenant_id,
            name=name,
            state=INITIAL_STATE,
            region=region,
            correlation_id=event.correlation_id,
            priority=priority,
            spec=spec,
            idempotency_key=idempotency_key,
            idempotency_fingerprint=spec_fingerprint(spec) if idempotency_key else None,
        )
        ws.pending_transitions.append(
            Transition(None, INITIAL_STATE, actor, f"submitted via {source}", event.id, event.occurred_at)
        )
        ws.pending_events.append(event)
        return ws

    def transition(
        self,
        to: WorksetState,
        *,
        actor: str,
        reason: str = "",
        event: EventPayload | None = None,
        cause: Envelope | None = None,
    ) -> Envelope | None:
        """Move to `to` if the lifecycle allows it; the event (if any) is committed with the change."""
        check_transition(self.state, to)
        envelope = None
        if event is not None:
            envelope = self.event(event, cause=cause)
        self.pending_transitions.append(
            Transition(self.state, to, actor, reason, envelope.id if envelope else None, datetime.now(UTC))
        )
        self.state = to
        return envelope

    def event(self, payload: EventPayload, *, cause: Envelope | None = None) -> Envelope:
        """Record an event that is not a state change (e.g. a step finished)."""
        envelope = self.envelope(payload, cause=cause)
        self.pending_events.append(envelope)
        return envelope

    def envelope(self, payload: EventPayload, *, cause: Envelope | None = None) -> Envelope:
        """An event about this workset, not recorded on it: for a caller that writes it itself."""
        return new_envelope(
            payload,
            tenant_id=self.tenant_id,
            region=self.region,
            workset_id=self.id,
            correlation_id=self.correlation_id,
            causation_id=cause.id if cause else None,
        )
