"""The deployment's retry policy: backoff and memory escalation together, built from the settings."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stamen.diagnostics.codes import RetryClass
from stamen.retry.backoff import BackoffPolicy
from stamen.retry.decision import MemoryEscalation, RetryDecision, decide_retry
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
