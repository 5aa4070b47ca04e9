"""Retry policy: backoff delays, the pure retry/give-up decision, and what a requeue may change."""

from stamen.retry.backoff import BackoffPolicy, JitterMode
from stamen.retry.decision import (
    GiveUp,
    GiveUpReason,
    MemoryEscalation,
    RetryAfter,
    RetryDecision,
    decide_retry,
)
from stamen.retry.policy import RetryPolicy, decide_after_failure
from stamen.retry.requeue import CHANGEABLE_FIELDS, RequeueChanges, RequeueChangesInvalid

__all__ = [
    "CHANGEABLE_FIELDS",
    "BackoffPolicy",
    "GiveUp",
    "GiveUpReason",
    "JitterMode",
    "MemoryEscalation",
    "RequeueChanges",
    "RequeueChangesInvalid",
    "RetryAfter",
    "RetryDecision",
    "RetryPolicy",
    "decide_after_failure",
    "decide_retry",
]
