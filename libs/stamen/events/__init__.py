"""Typed, versioned lifecycle events and their wire envelope."""

from stamen.events.envelope import (
    Envelope,
    MalformedEvent,
    UndecodableMessage,
    UnknownEventType,
    decode_envelope,
    new_envelope,
)
from stamen.events.types import EVENT_TYPES, EventPayload

__all__ = [
    "EVENT_TYPES",
    "Envelope",
    "EventPayload",
    "MalformedEvent",
    "UndecodableMessage",
    "UnknownEventType",
    "decode_envelope",
    "new_envelope",
]
