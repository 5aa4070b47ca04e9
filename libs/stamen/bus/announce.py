"""Events published the moment their transaction has committed, ahead of the outbox relay.

The outbox row stays the guarantee: the relay publishes it as always, and JetStream drops whichever copy
comes second (the event id is the Nats-Msg-Id). Publishing at once only saves the consumer the wait for
the relay (its NOTIFY, its batch window: ~30 ms of a submission's way to `queued` at 50 a second). It is a
core NATS publish, which the stream takes in like any other: nothing to wait for, so a NATS away or slow
never holds up the caller; a copy lost then is the relay's to send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from stamen.bus.connections import BusConnection
from stamen.bus.subjects import event_subject
from stamen.events.envelope import Envelope

log = structlog.get_logger(__name__)

# Committed events -> published now if that can be done without waiting (never raises).
Announce = Callable[[Sequence[Envelope]], Awaitable[None]]


def announcer(bus: BusConnection) -> Announce:
    async def announce(events: Sequence[Envelope]) -> None:
        if not bus.up:
            return  # reconnecting: the client would buffer it; the relay sends it when NATS is back
        try:
            for event in events:
                await bus.nc.publish(
                    event_subject(event.tenant_id, event.type), event.to_json(), headers=event.headers()
                )
        except Exception as exc:  # the outbox row is still there: the relay publishes it
            log.info("bus.announce_skipped", error=str(exc))

    return announce
