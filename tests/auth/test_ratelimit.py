"""Token-bucket rate limiter: properties over arbitrary request timings (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stamen.auth.errors import RateLimited
from stamen.auth.ratelimit import RateLimiter


class FakeClock:
    """The limiter is pure: time is whatever the test says it is."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


rates = st.floats(min_value=0.1, max_value=100, allow_nan=False)
bursts = st.integers(min_value=1, max_value=50)
gaps = st.lists(st.floats(min_value=0, max_value=2, allow_nan=False), min_size=1, max_size=200)


@settings(max_examples=200)
@given(rate=rates, burst=bursts, waits=gaps)
def test_never_more_than_burst_plus_refill(rate: float, burst: int, waits: list[float]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=rate, burst=burst, clock=clock)
    allowed_at: list[float] = []
    for wait in waits:
        clock.now += wait
        if limiter.check("p").allowed:
            allowed_at.append(clock.now)
    # In any window [t0, t1] at most burst + rate * (t1 - t0) requests pass.
    for i, start in enumerate(allowed_at):
        for j in range(i, len(allowed_at)):
            assert j - i + 1 <= burst + rate * (allowed_at[j] - start) + 1e-6


@given(rate=rates, burst=bursts)
def test_a_full_burst_passes_then_the_next_waits_exactly_retry_after(rate: float, burst: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=rate, burst=burst, clock=clock)
    assert all(limiter.check("p").allowed for _ in range(burst))
    refused = limiter.check("p")
    assert not refused.allowed and refused.retry_after == pytest.approx(1 / rate)
    clock.now += refused.retry_after * 0.99
    assert not limiter.check("p").allowed
    clock.now += refused.retry_after * 0.02
    assert limiter.check("p").allowed


@given(burst=bursts, others=st.lists(st.text(min_size=1, max_size=5), max_size=20, unique=True))
def test_principals_do_not_share_buckets(burst: int, others: list[str]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1, burst=burst, clock=clock)
    for _ in range(burst):
        limiter.check("noisy")
    assert not limiter.check("noisy").allowed
    for other in others:
        if other != "noisy":
            assert limiter.check(other).allowed


@given(idle=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_idle_time_never_fills_beyond_burst(idle: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=5, burst=3, clock=clock)
    clock.now += idle
    assert [limiter.check("p").allowed for _ in range(4)] == [True, True, True, False]


def test_enforce_raises_rate_limited_with_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=2, burst=1, clock=clock)
    limiter.enforce("p")
    with pytest.raises(RateLimited) as err:
        limiter.enforce("p")
    assert err.value.code == "RATE_LIMITED" and err.value.http_status == 429
    assert err.value.retry_after == pytest.approx(0.5)


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_second=1, burst=1, clock=clock, max_keys=10)
    for i in range(100):
        limiter.check(f"p{i}")
    assert len(limiter) == 10


def test_a_clock_going_backwards_does_not_mint_tokens() -> None:
    clock = FakeClock()
    clock.now = 100.0
    limiter = RateLimiter(rate_per_second=1, burst=1, clock=clock)
    assert limiter.check("p").allowed
    clock.now = 50.0
    assert not limiter.check("p").allowed
