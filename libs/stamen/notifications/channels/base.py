"""What every channel adapter takes and gives back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from stamen.notifications.delivery import SendFailure
from stamen.notifications.messages import Message


@dataclass(frozen=True)
class Outgoing:
    """One send: who it is for, under which idempotency key, and what it says."""

    owner: str
    channel: str
    recipient: str
    idempotency_key: str
    event_id: str
    event_type: str
    workset_id: str | None
    message: Message
    options: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1  # this try's number: a retry's body differs, so its signature does too


@dataclass(frozen=True)
class Sent:
    reference: str  # what the receiver calls it: an SNS message id, a Linear issue, an HTTP status
    skipped: bool = False  # nothing to do (e.g. no Linear issue to comment on)


class SendError(Exception):
    def __init__(self, failure: SendFailure) -> None:
        super().__init__(failure.error)
        self.failure = failure


class Throttled(Exception):
    """Our own rate limit for this receiver says wait; the send is put back, not counted as a try."""

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"rate limited for {wait_seconds:.1f}s")
        self.wait_seconds = wait_seconds


# gate(limit name, bucket key): returns once a token is taken, or raises Throttled.
RateGate = Callable[[str, str], Awaitable[None]]


class ChannelAdapter(Protocol):
    async def send(self, out: Outgoing, gate: RateGate) -> Sent: ...


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : URLs such as Slack's carry their credential in the path."""
    parts = urlsplit(url)
    netloc = parts.hostname or "?"
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}/…"
