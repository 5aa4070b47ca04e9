"""What happens to a delivery after a try: delivered, tried again later (capped, jittered), or failed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from stamen.retry.backoff import BackoffPolicy

# A receiver's own "come back in N seconds" is obeyed, but never beyond this.
MAX_SERVER_DELAY_SECONDS = 3600.0


@dataclass(frozen=True)
class SendFailure:
    """Why a send did not succeed. `retryable`: a timeout, 5xx, 429, a connection error; otherwise the
    receiver refused it (4xx, bad credentials) and trying again would only repeat the refusal."""

    error: str
    retryable: bool
    retry_after: float | None = None  # what the receiver asked for (Retry-After, a rate-limit reset)


@dataclass(frozen=True)
class RetryAt:
    delay_seconds: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class DeliveryBudget:
    """`max_attempts` tries in all; between them, full-jitter exponential backoff with a cap."""

    max_attempts: int
    backoff: BackoffPolicy

    def after(
        self, failure: SendFailure, attempts: int, rng: random.Random | None = None
    ) -> RetryAt | GiveUp:
        """`attempts`: tries made so far, this one included."""
        if not failure.retryable:
            return GiveUp(f"not retryable: {failure.error}")
        if attempts >= self.max_attempts:
            return GiveUp(f"{attempts} attempts failed; last: {failure.error}")
        if failure.retry_after is not None:
            return RetryAt(min(max(failure.retry_after, 0.0), MAX_SERVER_DELAY_SECONDS))
        return RetryAt(self.backoff.delay_for(attempts, rng))
