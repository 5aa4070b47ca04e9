"""How long a service's background loop waits after a failed pass before it tries again."""

from __future__ import annotations

from stamen.retry.backoff import BackoffPolicy


class FailureBackoff:
    """Capped exponential delays for consecutive failures (initial, 2x initial, ... up to the cap),
    back to the initial delay after a success.

    No jitter: each process runs one such loop per job, so there is no burst of retries to spread,
    and fixed delays keep the logged `retry_in` values predictable."""

    def __init__(self, initial_seconds: float, cap_seconds: float) -> None:
        self._policy = BackoffPolicy(
            initial_seconds=initial_seconds, factor=2.0, cap_seconds=cap_seconds, jitter="none"
        )
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last success."""
        return self._failures

    def failed(self) -> float:
        """Count one more failure; returns the seconds to wait before the next try."""
        self._failures += 1
        return self._policy.delay_for(self._failures)

    def succeeded(self) -> None:
        self._failures = 0
