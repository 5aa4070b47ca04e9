"""RecoveryRepository: what the reconcilers look for in PostgreSQL, the source of truth.

A workset waits for an event in four states: `submitted`/`validating` (for the validator),
`failed` without a diagnosis (for diagnostics), `failed` with a diagnosis the scheduler has not acted
on, and `retry_wait` (for its timer). Each query returns those that have waited longer than a
threshold since they entered that state (`state_entered_at`: a save that leaves the state as it was does
not restart the wait), longest first (the index `worksets_unsettled_since`), with the id of the event that
should have moved them on (from `workset_history`), so a reconciler can handle that very event: its inbox
claim is the consumer's, and whichever comes second, the event or the reconciler, finds the work done.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from stamen.events.envelope import Envelope, UndecodableMessage, decode_envelope
from stamen.store.db import Connection


@dataclass(frozen=True)
class Unsettled:
    """A workset waiting for the event `event_id` (None: its history names none) since `age_seconds`."""

    workset_id: str
    attempt: int
    event_id: uuid.UUID | None
    age_seconds: float


def _unsettled(rows: Sequence[asyncpg.Record]) -> list[Unsettled]:
    return [Unsettled(r["id"], r["attempt"], r["event_id"], float(r["age_seconds"])) for r in rows]


class RecoveryRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def stale_submissions(self, older_than_seconds: float, limit: int = 50) -> list[Unsettled]:
        """Submitted (or validating) longer than the threshold: workset.submitted was lost, parked or is
        still waiting to be handled. Its event is the one the submission wrote (first history row)."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.attempt, h.event_id, extract(epoch FROM now() - w.state_entered_at) AS age_seconds
               FROM worksets w
               LEFT JOIN workset_history h ON h.workset_id = w.id AND h.from_state IS NULL
               WHERE w.state IN ('submitted', 'validating')
                 AND w.state_entered_at < now() - make_interval(secs => $1)
               ORDER BY w.state_entered_at LIMIT $2""",
            older_than_seconds,
            limit,
        )
        return _unsettled(rows)

    async def undiagnosed_failures(self, older_than_seconds: float, limit: int = 50) -> list[Unsettled]:
        """Failed longer than the threshold with no diagnosis of the current attempt: workset.failed
        (the latest transition to `failed`) has not been handled."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.attempt, extract(epoch FROM now() - w.state_entered_at) AS age_seconds,
                      (SELECT h.event_id FROM workset_history h WHERE h.workset_id = w.id AND h.to_state = 'failed'
                       ORDER BY h.version DESC LIMIT 1) AS event_id
               FROM worksets w
               WHERE w.state = 'failed' AND w.state_entered_at < now() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT 1 FROM diagnoses d WHERE d.workset_id = w.id AND d.attempt = w.attempt)
               ORDER BY w.state_entered_at LIMIT $2""",
            older_than_seconds,
            limit,
        )
        return _unsettled(rows)

    async def unhandled_diagnoses(
        self, consumer: str, older_than_seconds: float, limit: int = 50
    ) -> list[Unsettled]:
        """Failed and diagnosed (current attempt) longer than the threshold, and `consumer` has no claim
        on the workset.diagnosed event (the diagnosis row's event id): the retry decision is pending."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.attempt, d.event_id, extract(epoch FROM now() - d.created_at) AS age_seconds
               FROM worksets w JOIN diagnoses d ON d.workset_id = w.id AND d.attempt = w.attempt
               WHERE w.state = 'failed' AND d.created_at < now() - make_interval(secs => $2)
                 AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = $1 AND i.event_id = d.event_id)
               ORDER BY d.created_at LIMIT $3""",
            consumer,
            older_than_seconds,
            limit,
        )
        return _unsettled(rows)

    async def waiting_without_timer(self, older_than_seconds: float, limit: int = 50) -> list[Unsettled]:
        """In retry_wait longer than the threshold without a retry timer still to fire."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.attempt, NULL::uuid AS event_id, extract(epoch FROM now() - w.state_entered_at) AS age_seconds
               FROM worksets w
               WHERE w.state = 'retry_wait' AND w.state_entered_at < now() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.workset_id = w.id AND t.kind = 'retry'
                                 AND t.fired_at IS NULL)
               ORDER BY w.state_entered_at LIMIT $2""",
            older_than_seconds,
            limit,
        )
        return _unsettled(rows)

    async def stored_event(self, event_id: uuid.UUID) -> Envelope | None:
        """The event as it was written (its outbox row), while it waits to be published (a row leaves
        the outbox when the relay has published it); None when it is gone or cannot be read by this build."""
        body = await self._conn.fetchval("SELECT body FROM outbox WHERE event_id = $1", event_id)
        if body is None:
            return None
        try:
            return decode_envelope(bytes(body))
        except UndecodableMessage:
            return None

    async def failure_facts(self, workset_id: str, attempt: int) -> FailureFacts:
        """What workset.failed said, rebuilt from PostgreSQL when its outbox row is gone: the attempt's
        last step run that did not succeed (its log tail stays in step_runs) and the reason recorded
        with the transition to `failed`."""
        run = await self._conn.fetchrow(
            """SELECT id, step, exit_code, signal, state FROM step_runs
               WHERE workset_id = $1 AND attempt = $2 AND state NOT IN ('succeeded', 'submitting', 'pending', 'running')
               ORDER BY id DESC LIMIT 1""",
            workset_id,
            attempt,
        )
        reason = await self._conn.fetchval(
            """SELECT reason FROM workset_history WHERE workset_id = $1 AND to_state = 'failed'
               ORDER BY version DESC LIMIT 1""",
            workset_id,
        )
        return FailureFacts(
            step_run_id=run["id"] if run else None,
            step=run["step"] if run else None,
            exit_code=run["exit_code"] if run else None,
            signal=run["signal"] if run else None,
            step_state=run["state"] if run else None,
            reason=str(reason or ""),
        )


@dataclass(frozen=True)
class FailureFacts:
    step_run_id: int | None
    step: str | None
    exit_code: int | None
    signal: int | None
    step_state: str | None  # failed, lost, timeout, out_of_memory, cancelled
    reason: str
