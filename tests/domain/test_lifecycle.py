"""The workset state machine, exhaustively and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stamen.domain.lifecycle import (
    ALLOWED_TRANSITIONS,
    INITIAL_STATE,
    TERMINAL_STATES,
    IllegalTransition,
    WorksetState,
    check_transition,
)
from stamen.domain.workset import InvalidTenantId, Workset

states = st.sampled_from(list(WorksetState))

# The workset lifecycle written out here rather than read from ALLOWED_TRANSITIONS: a change to the
# table must be a deliberate change to this list too.
EXPECTED_TRANSITIONS: set[tuple[str, str]] = {
    ("submitted", "validating"), ("submitted", "cancelled"),
    ("validating", "queued"), ("validating", "rejected"), ("validating", "cancelled"),
    ("rejected", "archived"),
    ("queued", "scheduled"), ("queued", "cancelled"),
    # scheduled -> queued: the cluster refused the dispatch, or its region went down before a step ran
    ("scheduled", "running"), ("scheduled", "queued"), ("scheduled", "failed"), ("scheduled", "cancelled"),
    # running -> queued: its region went down; the attempt moves elsewhere
    ("running", "completed"), ("running", "failed"), ("running", "cancelled"), ("running", "queued"),
    # failed -> queued: an operator's requeue; a retry goes through retry_wait
    ("failed", "retry_wait"), ("failed", "dead_lettered"), ("failed", "queued"), ("failed", "archived"),
    ("retry_wait", "queued"), ("retry_wait", "cancelled"),
    ("dead_lettered", "queued"), ("dead_lettered", "archived"),
    ("completed", "archived"),
    ("cancelled", "archived"),
}  # fmt: skip
EXPECTED_TERMINAL = {"rejected", "completed", "cancelled", "archived", "dead_lettered"}


def new_workset() -> Workset:
    return Workset.submit(tenant_id="acme", name="w", region="us-west-2", spec={}, source="cli", actor="t")


@given(states, states)
def test_every_pair_is_allowed_exactly_when_the_lifecycle_says(
    current: WorksetState, requested: WorksetState
) -> None:
    ws = new_workset()
    ws.state = current
    if (current.value, requested.value) in EXPECTED_TRANSITIONS:
        ws.transition(requested, actor="t")
        assert ws.state is requested
    else:
        with pytest.raises(IllegalTransition) as info:
            ws.transition(requested, actor="t")
        assert ws.state is current  # a refused transition changes nothing
        assert info.value.code == "WORKSET_ILLEGAL_TRANSITION"
        assert str(current) in str(info.value) and str(requested) in str(info.value)


def test_all_pairs_enumerated() -> None:
    for a in WorksetState:
        for b in WorksetState:
            if (a.value, b.value) in EXPECTED_TRANSITIONS:
                check_transition(a, b)
            else:
                with pytest.raises(IllegalTransition):
                    check_transition(a, b)
    assert {s.value for s in TERMINAL_STATES} == EXPECTED_TERMINAL
    assert INITIAL_STATE is WorksetState.SUBMITTED


def test_every_state_is_reachable_and_only_archived_is_a_dead_end() -> None:
    seen = {INITIAL_STATE}
    frontier = [INITIAL_STATE]
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(WorksetState)
    assert [s for s in WorksetState if not ALLOWED_TRANSITIONS[s]] == [WorksetState.ARCHIVED]
    assert WorksetState.RUNNING not in TERMINAL_STATES


def test_transitions_record_history_and_events() -> None:
    ws = new_workset()
    ws.transition(WorksetState.VALIDATING, actor="validator", reason="start")
    assert [(t.from_state, t.to_state) for t in ws.pending_transitions] == [
        (None, WorksetState.SUBMITTED),
        (WorksetState.SUBMITTED, WorksetState.VALIDATING),
    ]
    assert ws.pending_events[0].type == "workset.submitted"
    assert ws.pending_events[0].correlation_id == ws.correlation_id


@pytest.mark.parametrize("bad", ["", "Acme", "a b", "a.b", "a*", "-x", "x" * 64])
def test_tenant_ids_must_be_subject_safe(bad: str) -> None:
    with pytest.raises(InvalidTenantId):
        Workset.submit(tenant_id=bad, name="w", region="r", spec={}, source="cli", actor="t")
