"""The workset state machine: which state may follow which, and nothing else."""

from __future__ import annotations

from enum import StrEnum


class WorksetState(StrEnum):
    SUBMITTED = "submitted"
    VALIDATING = "validating"
    REJECTED = "rejected"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"
    ARCHIVED = "archived"


S = WorksetState

# Each state and the states that may follow it. A retry goes failed -> retry_wait -> queued, so the
# history shows every failure; an operator's requeue of a dead letter starts again at queued.
ALLOWED_TRANSITIONS: dict[WorksetState, frozenset[WorksetState]] = {
    S.SUBMITTED: frozenset({S.VALIDATING, S.CANCELLED}),
    S.VALIDATING: frozenset({S.QUEUED, S.REJECTED, S.CANCELLED}),
    S.REJECTED: frozenset({S.ARCHIVED}),
    S.QUEUED: frozenset({S.SCHEDULED, S.CANCELLED}),
    # scheduled -> queued: the cluster refused the dispatch, the slot is given back.
    S.SCHEDULED: frozenset({S.RUNNING, S.QUEUED, S.FAILED, S.CANCELLED}),
    # running -> queued: its region went down; the attempt moves to another region (no failure of its own).
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.QUEUED}),
    S.FAILED: frozenset({S.RETRY_WAIT, S.DEAD_LETTERED, S.QUEUED, S.ARCHIVED}),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.CANCELLED}),
    S.DEAD_LETTERED: frozenset({S.QUEUED, S.ARCHIVED}),
    S.COMPLETED: frozenset({S.ARCHIVED}),
    S.CANCELLED: frozenset({S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

TERMINAL_STATES: frozenset[WorksetState] = frozenset(
    {S.REJECTED, S.COMPLETED, S.CANCELLED, S.ARCHIVED, S.DEAD_LETTERED}
)

INITIAL_STATE = S.SUBMITTED


class IllegalTransition(ValueError):
    """A transition the lifecycle does not allow; carries both states for the caller's error."""

    code = "WORKSET_ILLEGAL_TRANSITION"

    def __init__(self, current: WorksetState, requested: WorksetState) -> None:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none (final state)"
        super().__init__(
            f"a workset in state '{current}' cannot move to '{requested}'; allowed next states: {allowed}"
        )
        self.current = current
        self.requested = requested


def can_transition(current: WorksetState, requested: WorksetState) -> bool:
    return requested in ALLOWED_TRANSITIONS[current]


def check_transition(current: WorksetState, requested: WorksetState) -> None:
    if not can_transition(current, requested):
        raise IllegalTransition(current, requested)
