"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>", sent as `Stamen-Signature: t=<unix>,v1=<hex>`.

The timestamp is inside the signed text, so a receiver that refuses old timestamps (and remembers the
signatures it accepted within that window) cannot be fooled by a replayed request. `verify` is what a
receiver runs; docs/notifications.md shows it in a complete receiver.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Stamen-Signature"
IDEMPOTENCY_HEADER = "Stamen-Idempotency-Key"
EVENT_HEADER = "Stamen-Event-Type"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureInvalid(ValueError):
    """The header is missing or malformed, the signature does not match, or it is too old."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for `body` sent at `timestamp` (Unix seconds)."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str | None, body: bytes, *, now: float, tolerance: float = DEFAULT_TOLERANCE_SECONDS
) -> int:
    """The signed timestamp when `header` signs `body` and is at most `tolerance` seconds from `now`."""
    if not header:
        raise SignatureInvalid(f"no {SIGNATURE_HEADER} header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise SignatureInvalid("the header has no t=<unix seconds>") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureInvalid(
            f"the timestamp is {now - timestamp:.0f} s from now (tolerance {tolerance:.0f} s)"
        )
    expected = signature(secret, timestamp, body)
    # Several v1 values are allowed so a secret can be rotated without a gap.
    if not any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", [])):
        raise SignatureInvalid("no v1 signature matches the body")
    return timestamp
