"""Retry policy: backoff delays and the pure retry/give-up decision."""

from stamen.retry.backoff import BackoffPolicy, JitterMode
from stamen.retry.decision import (
    GiveUp,
    GiveUpReason,
    MemoryEscalation,
    RetryAfter,
    RetryDecision,
    decide_retry,
)

__all__ = [
    "BackoffPolicy",
    "GiveUp",
    "GiveUpReason",
    "JitterMode",
    "MemoryEscalation",
    "RetryAfter",
    "RetryDecision",
    "decide_retry",
]
