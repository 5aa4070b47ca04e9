"""Per-principal token buckets (pure; the clock is injected).

Each principal has a bucket of `burst` tokens that refills at `rate` tokens per second; a request takes
one token or is refused with the time until one is available. Past `max_keys` principals the least
recently used bucket is forgotten (it comes back full); keys are authenticated principals, not raw IPs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from stamen.auth.errors import RateLimited


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: float  # tokens left after this request
    retry_after: float  # seconds until one token is available (0 when allowed)


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> Decision:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return Decision(True, self.tokens, 0.0)
        return Decision(False, self.tokens, (cost - self.tokens) / self.rate)


class RateLimiter:
    def __init__(
        self,
        *,
        rate_per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be > 0 and burst >= 1")
        self.rate = rate_per_second
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str, cost: float = 1.0) -> Decision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        decision = bucket.take(now, cost)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # least recently used
        return decision

    def enforce(self, key: str, cost: float = 1.0) -> Decision:
        """`check`, raising RateLimited (code RATE_LIMITED, HTTP 429 with Retry-After) when refused."""
        decision = self.check(key, cost)
        if not decision.allowed:
            raise RateLimited("too many requests", retry_after=decision.retry_after)
        return decision

    def __len__(self) -> int:
        return len(self._buckets)
