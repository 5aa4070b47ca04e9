from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stamen.diagnostics import RetryClass
from stamen.retry import (
    BackoffPolicy,
    GiveUp,
    GiveUpReason,
    MemoryEscalation,
    RetryAfter,
    RetryPolicy,
    decide_after_failure,
    decide_retry,
)

FIXED = BackoffPolicy(initial_seconds=5, factor=2, cap_seconds=60, jitter="none")


def test_transient_failure_is_retried_with_backoff_and_same_memory() -> None:
    decision = decide_retry(RetryClass.TRANSIENT, attempt=2, max_retries=3, policy=FIXED)
    assert decision == RetryAfter(delay_seconds=10, memory_multiplier=1.0, next_attempt=3)


def test_resource_failure_grows_memory_up_to_the_cap() -> None:
    escalation = MemoryEscalation(growth=2.0, max_multiplier=6.0)
    multipliers = []
    for attempt in range(1, 5):
        decision = decide_retry(RetryClass.RESOURCE, attempt, max_retries=10, policy=FIXED, memory=escalation)
        assert isinstance(decision, RetryAfter)
        multipliers.append(decision.memory_multiplier)
    assert multipliers == [2.0, 4.0, 6.0, 6.0]


def test_resource_failure_uses_default_escalation() -> None:
    decision = decide_retry(RetryClass.RESOURCE, attempt=1, max_retries=2, policy=FIXED)
    assert isinstance(decision, RetryAfter)
    assert decision.memory_multiplier == MemoryEscalation().growth


@pytest.mark.parametrize("retry_class", [RetryClass.CONFIGURATION, RetryClass.DATA, RetryClass.PERMANENT])
def test_non_retryable_classes_give_up_immediately(retry_class: RetryClass) -> None:
    decision = decide_retry(retry_class, attempt=1, max_retries=5, policy=FIXED)
    assert isinstance(decision, GiveUp)
    assert decision.reason is GiveUpReason.NOT_RETRYABLE
    assert retry_class.value in decision.detail


def test_budget_exhausted_gives_up() -> None:
    assert isinstance(decide_retry(RetryClass.TRANSIENT, 3, 3, FIXED), RetryAfter)
    decision = decide_retry(RetryClass.TRANSIENT, attempt=4, max_retries=3, policy=FIXED)
    assert isinstance(decision, GiveUp)
    assert decision.reason is GiveUpReason.RETRIES_EXHAUSTED
    assert "3" in decision.detail


def test_zero_retries_means_never_retry() -> None:
    decision = decide_retry(RetryClass.TRANSIENT, attempt=1, max_retries=0, policy=FIXED)
    assert isinstance(decision, GiveUp) and decision.reason is GiveUpReason.RETRIES_EXHAUSTED


@pytest.mark.parametrize("retry_class", list(RetryClass))
def test_with_retries_switched_off_every_failure_gives_up_with_the_reason_a_person_acts_on(
    retry_class: RetryClass,
) -> None:
    decision = decide_after_failure(None, retry_class, failed_attempts=1, max_retries=3)
    assert isinstance(decision, GiveUp)
    expected = GiveUpReason.RETRIES_DISABLED if retry_class.is_retryable else GiveUpReason.NOT_RETRYABLE
    assert decision.reason is expected
    # With a policy the same call is decide_retry's answer.
    with_policy = decide_after_failure(RetryPolicy(backoff=FIXED), retry_class, 1, 3)
    assert with_policy == decide_retry(retry_class, 1, 3, FIXED)


def test_give_up_reasons_are_the_published_contract() -> None:
    # The values are read by consumers of workset.dead_lettered (notifier, lab systems): never rename.
    assert {r.value for r in GiveUpReason} == {"retries_exhausted", "not_retryable", "retries_disabled"}


def test_jittered_delay_is_reproducible_with_rng() -> None:
    policy = BackoffPolicy(initial_seconds=5, factor=2, cap_seconds=60, jitter="full")
    first = decide_retry(RetryClass.TRANSIENT, 2, 3, policy, rng=random.Random(3))
    second = decide_retry(RetryClass.TRANSIENT, 2, 3, policy, rng=random.Random(3))
    assert first == second
    assert isinstance(first, RetryAfter) and 0 <= first.delay_seconds <= 10


@given(
    st.sampled_from(list(RetryClass)),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=50),
    st.floats(min_value=1.0, max_value=4.0),
    st.floats(min_value=1.0, max_value=16.0),
)
def test_decision_invariants(
    retry_class: RetryClass, attempt: int, max_retries: int, growth: float, cap: float
) -> None:
    escalation = MemoryEscalation(growth=growth, max_multiplier=cap)
    decision = decide_retry(retry_class, attempt, max_retries, FIXED, memory=escalation)
    if not retry_class.is_retryable:
        assert isinstance(decision, GiveUp) and decision.reason is GiveUpReason.NOT_RETRYABLE
    elif attempt > max_retries:
        assert isinstance(decision, GiveUp) and decision.reason is GiveUpReason.RETRIES_EXHAUSTED
    else:
        assert isinstance(decision, RetryAfter)
        assert 0 <= decision.delay_seconds <= FIXED.cap_seconds
        assert 1.0 <= decision.memory_multiplier <= cap
        if retry_class is RetryClass.TRANSIENT:
            assert decision.memory_multiplier == 1.0


def test_multiplier_does_not_overflow_for_large_attempts() -> None:
    assert MemoryEscalation(growth=10, max_multiplier=8).multiplier_after(10**9) == 8


@pytest.mark.parametrize(("attempt", "max_retries"), [(0, 3), (-1, 3), (1, -1)])
def test_invalid_counts_are_rejected(attempt: int, max_retries: int) -> None:
    with pytest.raises(ValueError, match=">= "):
        decide_retry(RetryClass.TRANSIENT, attempt, max_retries, FIXED)


@pytest.mark.parametrize("arguments", [{"growth": 0.5}, {"max_multiplier": 0.9}, {"growth": float("inf")}])
def test_invalid_escalation_is_rejected(arguments: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        MemoryEscalation.model_validate(arguments)
