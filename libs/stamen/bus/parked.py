"""The STAMEN_DLQ stream read as parked messages: what each one is, and sending one back.

Parked *messages* are bus messages a consumer could not handle (after `max_deliver` deliveries, or at
once when undecodable or malformed); they live in the stream. Parked *worksets* are the `dead_letters`
table (`stamen dlq ls`), a different thing: a workset stamen stopped retrying.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from stamen.bus.connections import headers_of
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import DLQ_PREFIX, DLQ_STREAM, EVENTS_PREFIX

# Headers a replay carries: which parked message it is, and the one consumer it is for (the others
# that see it on the events subject acknowledge it without handling it).
REPLAY_OF = "Stamen-Replay-Of"
REPLAY_FOR = "Stamen-Replay-For"
_PARKING_HEADERS = ("Stamen-Dlq-", "Stamen-Original-", "Nats-Msg-Id", REPLAY_OF, REPLAY_FOR)
BODY_PREVIEW_BYTES = 16_384
# What an operator (or a reconciler) did with a parked message (dlq_message_actions.action; its CHECK).
ParkedMessageAction = Literal["replayed", "resolved"]


@dataclass(frozen=True)
class ParkedMessage:
    seq: int  # in STAMEN_DLQ
    subject: str  # stamen.dlq.<reason>.<consumer>
    msg_id: str  # the parked copy's Nats-Msg-Id: one per parking
    reason: str  # max_deliver, malformed, unknown_type, undecodable
    consumer: str
    parked_at: datetime
    original_subject: str
    original_seq: int | None
    deliveries: int | None
    error: str
    headers: dict[str, str]
    body: bytes

    @property
    def envelope(self) -> dict[str, Any] | None:
        """The body as a JSON object, if it is one (it may be exactly what could not be decoded)."""
        try:
            doc = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    @property
    def event_id(self) -> str | None:
        doc = self.envelope
        found = self.headers.get("Stamen-Original-Msg-Id") or (doc or {}).get("id")
        return str(found) if found else None

    @property
    def event_type(self) -> str | None:
        found = self.headers.get("Stamen-Event-Type") or (self.envelope or {}).get("type")
        return str(found) if found else None

    @property
    def workset_id(self) -> str | None:
        found = (self.envelope or {}).get("workset_id")
        return str(found) if isinstance(found, str) and found else None

    @property
    def tenant_id(self) -> str | None:
        found = self.headers.get("Stamen-Tenant") or (self.envelope or {}).get("tenant_id")
        return str(found) if found else None

    def age_seconds(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - self.parked_at).total_seconds()

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "reason": self.reason,
            "consumer": self.consumer,
            "parked_at": self.parked_at,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "workset_id": self.workset_id,
            "tenant_id": self.tenant_id,
            "original_subject": self.original_subject,
            "deliveries": self.deliveries,
            "error": self.error,
        }

    def body_text(self) -> str:
        text = self.body[:BODY_PREVIEW_BYTES].decode("utf-8", errors="replace")
        return text + ("…" if len(self.body) > BODY_PREVIEW_BYTES else "")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _parked(raw: Any) -> ParkedMessage:
    headers = headers_of(raw.headers)
    subject = str(raw.subject or "")
    parts = subject.split(".")  # stamen.dlq.<reason>.<consumer>
    return ParkedMessage(
        seq=int(raw.seq),
        subject=subject,
        msg_id=headers.get("Nats-Msg-Id", f"seq-{raw.seq}"),
        reason=headers.get("Stamen-Dlq-Reason") or (parts[2] if len(parts) > 3 else "unknown"),
        consumer=headers.get("Stamen-Dlq-Consumer") or (".".join(parts[3:]) if len(parts) > 3 else ""),
        parked_at=raw.time or datetime.now(UTC),
        original_subject=headers.get("Stamen-Original-Subject", ""),
        original_seq=_int(headers.get("Stamen-Dlq-Stream-Seq")),
        deliveries=_int(headers.get("Stamen-Dlq-Deliveries")),
        error=headers.get("Stamen-Dlq-Error", ""),
        headers=headers,
        body=bytes(raw.data or b""),
    )


class ParkedMessages:
    """Reads, replays and removes messages in STAMEN_DLQ."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def list(
        self, *, consumer: str | None = None, reason: str | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[ParkedMessage]:
        """Oldest first, from after `after_seq` (a cursor), at most `limit`."""
        subject = f"{DLQ_PREFIX}.{reason or '*'}.{consumer or '*'}"
        found: list[ParkedMessage] = []
        seq = after_seq + 1
        while len(found) < limit:
            try:
                raw = await self._js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            found.append(_parked(raw))
            seq = int(raw.seq or seq) + 1
        return found

    async def get(self, seq: int) -> ParkedMessage | None:
        try:
            raw = await self._js.get_msg(DLQ_STREAM, seq=seq)
        except NotFoundError:
            return None
        if not str(raw.subject or "").startswith(f"{DLQ_PREFIX}."):
            return None
        return _parked(raw)

    async def republish(self, message: ParkedMessage) -> bool:
        """Send the message again on its original subject, for its consumer only, with its own
        Nats-Msg-Id (`replay-<parked copy's id>`: a second replay of the same parking is dropped as a
        duplicate). The body, and so the event id the inbox claims, is unchanged. True if stored."""
        if not message.original_subject.startswith(f"{EVENTS_PREFIX}."):
            raise ValueError(f"parked message {message.seq} has no events subject to go back to")
        headers = {k: v for k, v in message.headers.items() if not k.startswith(_PARKING_HEADERS)}
        headers.update({
            "Nats-Msg-Id": f"replay-{message.msg_id}",
            REPLAY_OF: str(message.seq),
            REPLAY_FOR: message.consumer,
        })  # fmt: skip
        return await JetStreamPublisher(self._js).publish_raw(message.original_subject, message.body, headers)

    async def delete(self, seq: int) -> None:
        try:
            await self._js.delete_msg(DLQ_STREAM, seq)
        except NotFoundError:
            pass  # gone already
