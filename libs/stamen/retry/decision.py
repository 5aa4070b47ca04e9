"""Decide, without side effects, whether a failed job should be retried and how."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from stamen.diagnostics.codes import RetryClass
from stamen.retry.backoff import BackoffPolicy


class MemoryEscalation(BaseModel):
    """How much to grow the memory request on each retry of a resource failure."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    growth: float = Field(default=2.0, ge=1, description="multiplier applied per failed attempt")
    max_multiplier: float = Field(default=4.0, ge=1, description="cap relative to the original request")

    def multiplier_after(self, failed_attempts: int) -> float:
        """``min(max_multiplier, growth ** failed_attempts)``, without overflowing for large counts."""
        if self.growth == 1.0 or failed_attempts * math.log(self.growth) >= math.log(self.max_multiplier):
            return self.max_multiplier if self.growth > 1.0 else 1.0
        return float(self.growth**failed_attempts)


class GiveUpReason(StrEnum):
    """Why stamen stops trying: the ``reason`` of a dead letter and of ``workset.dead_lettered``.

    One definition for the whole system (store, events, CLI, API, notifier); the values are a
    contract with consumers, documented in docs/retry-recovery.md. Add values, never rename them.
    """

    RETRIES_EXHAUSTED = "retries_exhausted"  # retryable, but the retry budget is used up
    NOT_RETRYABLE = "not_retryable"  # the diagnosis says a re-run cannot change the outcome
    RETRIES_DISABLED = "retries_disabled"  # retryable, but retries are switched off (STAMEN_ENABLE_RETRY)


@dataclass(frozen=True, slots=True)
class RetryAfter:
    delay_seconds: float
    # Relative to the job's original memory request; 1.0 unless the failure was a resource one.
    memory_multiplier: float
    next_attempt: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: GiveUpReason
    detail: str


RetryDecision = RetryAfter | GiveUp


def not_retryable(retry_class: RetryClass) -> GiveUp:
    return GiveUp(
        GiveUpReason.NOT_RETRYABLE,
        f"{retry_class.value} failures need a change to config, inputs or code before a re-run",
    )


def decide_retry(
    retry_class: RetryClass,
    attempt: int,
    max_retries: int,
    policy: BackoffPolicy,
    *,
    memory: MemoryEscalation | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decide what to do after failed attempt number ``attempt`` (1 = the original run failed).

    A job may run at most ``1 + max_retries`` times.  Non-retryable classes give up at once,
    whatever the budget, because repeating them cannot change the outcome.
    """
    if isinstance(attempt, bool) or attempt < 1:
        raise ValueError(f"attempt must be >= 1 (the number of failed runs so far), got {attempt}")
    if isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if not retry_class.is_retryable:
        return not_retryable(retry_class)
    if attempt > max_retries:
        return GiveUp(
            GiveUpReason.RETRIES_EXHAUSTED,
            f"failed {attempt} time(s); the retry budget of {max_retries} is used up",
        )
    multiplier = 1.0
    if retry_class is RetryClass.RESOURCE:
        escalation = memory if memory is not None else MemoryEscalation()
        multiplier = escalation.multiplier_after(attempt)
    return RetryAfter(
        delay_seconds=policy.delay_for(attempt, rng),
        memory_multiplier=multiplier,
        next_attempt=attempt + 1,
    )
