"""What a handler does with an event it can never act on: refuse it as malformed, so the consumer parks it
in the dead-letter stream at once (with the reason) instead of failing it `max_deliver` times.

A consumer only sees events committed with their workset (transactional outbox), so an event without a
`workset_id`, of the wrong payload type, or naming a workset that does not exist is poison, not a race.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from stamen.events.envelope import Envelope, MalformedEvent
from stamen.events.types import EventPayload
from stamen.store.errors import WorksetNotFound

P = TypeVar("P", bound=EventPayload)


def workset_id_of(envelope: Envelope) -> str:
    if not envelope.workset_id:
        raise MalformedEvent(f"{envelope.type} {envelope.id} has no workset_id; this consumer needs one")
    return envelope.workset_id


def payload_of(envelope: Envelope, kind: type[P]) -> P:
    if not isinstance(envelope.payload, kind):
        raise MalformedEvent(
            f"{envelope.type} {envelope.id} carries a {type(envelope.payload).__name__} payload; "
            f"this consumer handles {kind.event_type}"
        )
    return envelope.payload


@asynccontextmanager
async def known_workset(envelope: Envelope) -> AsyncIterator[None]:
    """Inside: a WorksetNotFound about this event's workset means the event is poison."""
    try:
        yield
    except WorksetNotFound as exc:
        raise MalformedEvent(
            f"{envelope.type} {envelope.id} names workset {envelope.workset_id!r}, "
            f"which does not exist: {exc}"
        ) from None
