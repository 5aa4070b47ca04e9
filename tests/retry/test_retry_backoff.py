from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stamen.retry import BackoffPolicy, JitterMode


@st.composite
def policies(draw: st.DrawFn, jitter: JitterMode | None = None) -> BackoffPolicy:
    initial = draw(st.floats(min_value=0.001, max_value=100.0))
    factor = draw(st.floats(min_value=1.0, max_value=10.0))
    cap = initial + draw(st.floats(min_value=0.0, max_value=10_000.0))
    mode: JitterMode = jitter if jitter is not None else draw(st.sampled_from(["full", "none"]))
    return BackoffPolicy(initial_seconds=initial, factor=factor, cap_seconds=cap, jitter=mode)


attempts = st.integers(min_value=1, max_value=100_000)


@given(policies(), attempts, st.integers(min_value=0, max_value=2**32))
def test_delay_is_within_zero_and_cap(policy: BackoffPolicy, attempt: int, seed: int) -> None:
    delay = policy.delay_for(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.cap_seconds
    assert delay <= policy.ceiling_for(attempt)


@given(policies(), attempts)
def test_ceiling_is_non_decreasing_and_capped(policy: BackoffPolicy, attempt: int) -> None:
    assert policy.ceiling_for(attempt) <= policy.ceiling_for(attempt + 1) <= policy.cap_seconds


@given(policies(jitter="none"), attempts)
def test_without_jitter_delay_equals_ceiling(policy: BackoffPolicy, attempt: int) -> None:
    assert policy.delay_for(attempt, random.Random(0)) == policy.ceiling_for(attempt)


@given(
    policies(jitter="full"), st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32)
)
def test_full_jitter_spreads_over_the_whole_range(policy: BackoffPolicy, attempt: int, seed: int) -> None:
    rng = random.Random(seed)
    ceiling = policy.ceiling_for(attempt)
    samples = [policy.delay_for(attempt, rng) for _ in range(2000)]
    assert min(samples) < 0.1 * ceiling
    assert max(samples) > 0.9 * ceiling


def test_ceiling_examples() -> None:
    policy = BackoffPolicy(initial_seconds=2, factor=3, cap_seconds=50, jitter="none")
    assert [policy.ceiling_for(attempt) for attempt in range(1, 6)] == [2, 6, 18, 50, 50]


def test_huge_attempt_does_not_overflow() -> None:
    policy = BackoffPolicy(initial_seconds=1, factor=10, cap_seconds=60)
    assert policy.ceiling_for(10**12) == 60


def test_same_seed_gives_same_delays() -> None:
    policy = BackoffPolicy()
    first = [policy.delay_for(n, random.Random(7)) for n in range(1, 10)]
    assert first == [policy.delay_for(n, random.Random(7)) for n in range(1, 10)]


def test_delay_without_rng_uses_module_random() -> None:
    policy = BackoffPolicy(initial_seconds=1, factor=2, cap_seconds=4)
    assert all(0.0 <= policy.delay_for(3) <= 4 for _ in range(50))


def test_policy_is_immutable() -> None:
    policy = BackoffPolicy()
    with pytest.raises(ValidationError):
        policy.factor = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial_seconds": 0}, "initial_seconds"),
        ({"initial_seconds": -1}, "greater than 0"),
        ({"factor": 0.5}, "factor"),
        ({"cap_seconds": 0}, "cap_seconds"),
        ({"initial_seconds": 10, "cap_seconds": 5}, "cap_seconds (5) must be >= initial_seconds (10)"),
        ({"jitter": "equal"}, "jitter"),
        ({"initial_seconds": float("nan")}, "initial_seconds"),
        ({"cap_seconds": float("inf")}, "cap_seconds"),
        ({"retries": 3}, "retries"),
    ],
)
def test_invalid_parameters_are_rejected_clearly(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        BackoffPolicy.model_validate(arguments)
    assert message in str(raised.value)


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempt_must_be_positive(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        BackoffPolicy().delay_for(attempt)


def test_attempt_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="attempt must be an int"):
        BackoffPolicy().ceiling_for(True)
