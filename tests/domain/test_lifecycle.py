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


def new_workset() -> Workset:
    return Workset.submit(tenant_id="acme", name="w", region="us-west-2", spec={}, source="cli", actor="t")


@given(states, states)
def test_every_pair_is_allowed_exactly_when_the_table_says(
    current: WorksetState, requested: WorksetState
) -> None:
    ws = new_workset()
    ws.state = current
    if requested in ALLOWED_TRANSITIONS[current]:
        ws.transition(requested, actor="t")
        assert ws.state is requested
    else:
        with pytest.raises(IllegalTransition) as info:
            ws.transition(requested, actor="t")
        assert ws.state is current  # a refused transition changes nothing
        assert info.value.code == "WORKSET_ILLEGAL_TRANSITION"
        assert str(current) in str(info.value) and str(requested) in str(info.value)


def test_all_pairs_enumerated() -> None:
    refused = 0
    for a in WorksetState:
        for b in WorksetState:
            if b in ALLOWED_TRANSITIONS[a]:
                check_transition(a, b)
            else:
                refused += 1
                with pytest.raises(IllegalTransition):
                    check_transition(a, b)
    assert refused > 100  # most pairs are illegal; the table is small on purpose


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
