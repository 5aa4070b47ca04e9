"""The wire envelope every event travels in, and its strict decoder."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stamen.events.types import EVENT_TYPES, UPCASTERS, EventPayload


class Envelope(BaseModel):
    """Ids travel on every event so any later reader can join tenant, region and the causal chain."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    type: str
    occurred_at: datetime
    workset_id: str | None
    tenant_id: str
    region: str
    causation_id: uuid.UUID | None = None
    correlation_id: uuid.UUID
    schema_version: int = 1
    payload: EventPayload = Field(exclude=False)

    def to_json(self) -> bytes:
        doc = self.model_dump(mode="json", exclude={"payload"})
        doc["payload"] = self.payload.model_dump(mode="json")
        return json.dumps(doc, separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        return {
            "Nats-Msg-Id": str(self.id),
            "Stamen-Event-Type": self.type,
            "Stamen-Tenant": self.tenant_id,
            "Stamen-Correlation-Id": str(self.correlation_id),
        }


def new_envelope(
    payload: EventPayload,
    *,
    tenant_id: str,
    region: str,
    workset_id: str | None = None,
    correlation_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    event_id = uuid.uuid4()
    return Envelope(
        id=event_id,
        type=payload.event_type,
        occurred_at=datetime.now(UTC),
        workset_id=workset_id,
        tenant_id=tenant_id,
        region=region,
        causation_id=causation_id,
        correlation_id=correlation_id or event_id,
        schema_version=payload.schema_version,
        payload=payload,
    )


class UndecodableMessage(ValueError):
    """A message no handler can act on. Consumers park it instead of retrying it forever."""

    reason = "undecodable"


class UnknownEventType(UndecodableMessage):
    reason = "unknown_type"


class MalformedEvent(UndecodableMessage):
    reason = "malformed"


def decode_envelope(data: bytes) -> Envelope:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"message body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedEvent(f"message body is a JSON {type(doc).__name__}, expected an object")
    event_type = doc.get("type")
    payload_model = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if payload_model is None:
        raise UnknownEventType(f"unknown event type {event_type!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    version = doc.get("schema_version", 1)
    raw_payload = doc.get("payload")
    upcast = UPCASTERS.get((str(event_type), version)) if type(version) is int else None
    if upcast is not None and isinstance(raw_payload, dict):
        # Written by an older producer (still in the stream during an upgrade): read as the current shape.
        raw_payload, version = upcast(dict(raw_payload)), payload_model.schema_version
    if version != payload_model.schema_version:
        raise MalformedEvent(
            f"{event_type} schema_version {version!r} is not supported "
            f"(this build reads version {payload_model.schema_version})"
        )
    try:
        payload = payload_model.model_validate(raw_payload)
        fields: dict[str, Any] = {k: v for k, v in doc.items() if k != "payload"}
        return Envelope.model_validate({**fields, "payload": payload, "schema_version": version})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise MalformedEvent(f"{event_type} failed validation: {problems}") from None
