"""Publishing to JetStream. The event id is the Nats-Msg-Id, so the server drops a re-publish."""

from __future__ import annotations

from typing import Protocol

from nats.js import JetStreamContext

from stamen.bus.subjects import event_subject
from stamen.events.envelope import Envelope


class RawPublisher(Protocol):
    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool: ...


class JetStreamPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        """Returns True if the stream stored it, False if it was a duplicate within the window."""
        ack = await self._js.publish(subject, body, headers=dict(headers), timeout=self._timeout)
        return not bool(ack.duplicate)

    async def publish(self, envelope: Envelope) -> bool:
        return await self.publish_raw(
            event_subject(envelope.tenant_id, envelope.type), envelope.to_json(), envelope.headers()
        )
