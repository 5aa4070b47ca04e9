"""Publishing to JetStream. The event id is the Nats-Msg-Id, so the server drops a re-publish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import PubAck

from stamen.bus.subjects import event_subject
from stamen.events.envelope import Envelope

# subject, body, headers
RawMessage = tuple[str, bytes, dict[str, str]]


class RawPublisher(Protocol):
    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool: ...


@runtime_checkable
class BatchPublisher(Protocol):
    async def publish_many(self, messages: Sequence[RawMessage]) -> list[bool | Exception]: ...


class JetStreamPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        """Returns True if the stream stored it, False if it was a duplicate within the window."""
        ack = await self._js.publish(subject, body, headers=dict(headers), timeout=self._timeout)
        return not bool(ack.duplicate)

    async def publish_many(self, messages: Sequence[RawMessage]) -> list[bool | Exception]:
        """Publish every message in order without waiting for each one's ack, then wait for the acks
        (one round trip for the batch instead of one per message). Per message: True (stored), False
        (a duplicate the server dropped) or the exception that message met (e.g. MaxPayloadError, the
        stream's 4xx refusal). Raises when the acks do not all come within the timeout: the broker is
        unreachable, which says nothing about any message."""
        # Checked here: the client checks it too, but only after registering the ack it then never resolves.
        limit = self._js._nc.max_payload
        outcomes: list[asyncio.Future[PubAck] | Exception] = []
        for subject, body, headers in messages:
            if len(body) > limit:
                outcomes.append(
                    MaxPayloadError(f"nats: message is {len(body)} bytes, over max_payload {limit}")
                )
                continue
            try:
                outcomes.append(await self._js.publish_async(subject, body, headers=dict(headers)))
            except Exception as exc:
                outcomes.append(exc)
        pending = [o for o in outcomes if isinstance(o, asyncio.Future)]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._timeout)
            for future in late:
                future.cancel()
            if late:
                raise TimeoutError(
                    f"nats: {len(late)} of {len(pending)} publish acks not received in {self._timeout:g}s"
                )
        results: list[bool | Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                results.append(outcome)
            elif (error := outcome.exception()) is not None:
                results.append(error if isinstance(error, Exception) else RuntimeError(str(error)))
            else:
                results.append(not bool(outcome.result().duplicate))
        return results

    async def publish(self, envelope: Envelope) -> bool:
        return await self.publish_raw(
            event_subject(envelope.tenant_id, envelope.type), envelope.to_json(), envelope.headers()
        )
