"""The deployment's retry policy (backoff and memory escalation, built from the settings), and the
decision after a diagnosed failure, retries switched off included."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stamen.diagnostics.codes import RetryClass
from stamen.retry.backoff import BackoffPolicy
from stamen.retry.decision import (
    GiveUp,
    GiveUpReason,
    MemoryEscalation,
    RetryDecision,
    decide_retry,
    not_retryable,
)
from stamen.settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    memory: MemoryEscalation = field(default_factory=MemoryEscalation)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """What the running scheduler uses (STAMEN_RETRY_*; docs/retry-recovery.md lists the defaults)."""
        return cls(
            backoff=BackoffPolicy(
                initial_seconds=settings.retry_initial_seconds,
                factor=settings.retry_factor,
                cap_seconds=settings.retry_cap_seconds,
            ),
            memory=MemoryEscalation(
                growth=settings.retry_memory_growth, max_multiplier=settings.retry_memory_max_multiplier
            ),
        )

    def decide(
        self,
        retry_class: RetryClass,
        failed_attempts: int,
        max_retries: int,
        rng: random.Random | None = None,
    ) -> RetryDecision:
        return decide_retry(
            retry_class, failed_attempts, max_retries, self.backoff, memory=self.memory, rng=rng
        )


RETRIES_DISABLED_DETAIL = "retries are switched off (STAMEN_ENABLE_RETRY=false)"


def decide_after_failure(
    policy: RetryPolicy | None,
    retry_class: RetryClass,
    failed_attempts: int,
    max_retries: int,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What follows failed run number ``failed_attempts`` of a workset; ``policy`` None: retries are off.

    With retries off every failure gives up: ``not_retryable`` when the diagnosis says a re-run cannot
    help (what a person must act on either way), else ``retries_disabled``.
    """
    if policy is not None:
        return policy.decide(retry_class, failed_attempts, max_retries, rng)
    if not retry_class.is_retryable:
        return not_retryable(retry_class)
    return GiveUp(GiveUpReason.RETRIES_DISABLED, RETRIES_DISABLED_DETAIL)
