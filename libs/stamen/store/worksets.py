"""WorksetRepository: every SQL statement about worksets and their history."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg

from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Transition, Workset
from stamen.store.db import Connection
from stamen.store.errors import ConcurrencyConflict, WorksetNotFound
from stamen.store.outbox import OutboxWriter, outbox_cte


@dataclass(frozen=True)
class HistoryRow:
    version: int
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    event_id: str | None
    at: datetime


def _from_row(row: asyncpg.Record) -> Workset:
    return Workset(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        state=WorksetState(row["state"]),
        region=row["region"],
        correlation_id=row["correlation_id"],
        priority=row["priority"],
        spec=json.loads(row["spec"]),
        idempotency_key=row["idempotency_key"],
        idempotency_fingerprint=row["idempotency_fingerprint"],
        version=row["version"],
        cluster=row["cluster"],
        placement_reason=row["placement_reason"],
        placement_scores=json.loads(row["placement_scores"]) if row["placement_scores"] else None,
        attempt=row["attempt"],
        retry_count=row["retry_count"],
        max_retries=row["max_retries"],
        cancel_requested_by=row["cancel_requested_by"],
        max_duration_seconds=row["max_duration_seconds"],
        memory_multiplier=row["memory_multiplier"],
    )


@dataclass(frozen=True)
class WorksetChange:
    """A statement that changes a row about one workset and returns that workset's id as `workset_id`
    (or no row, when it changed nothing): `WorksetRepository.get_changed` runs it with the workset's
    read, in one round trip. `sql` uses $1 … $n for `args`."""

    sql: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SavedWith:
    """Changes written by the statement that saves a workset (`WorksetRepository.save`), so they cost no
    round trip of their own: `ctes` are CTEs (`name AS (...)`, comma-separated) placed after the save's own,
    with $1 ... $n for `args`. Each should write only `WHERE EXISTS (SELECT 1 FROM updated)` (the
    workset's row, there when its version check let the save through), so that a save that conflicts
    changes nothing. They see the database as the statement began: not each other's changes, nor the save's.
    `returns`: the name of one of them (with RETURNING) whose row, at most one, the save returns.
    `before`: CTEs placed before the save's own (the same numbering as `ctes`), and `requires`: the name of
    one of them the save requires a row of (say, a row it locks), or the save changes nothing."""

    ctes: str
    args: tuple[Any, ...] = ()
    returns: str | None = None
    before: str = ""
    requires: str | None = None


_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=256)
def _numbered_from(sql: str, offset: int) -> str:
    """`sql` with its $n placeholders moved up by `offset` (its args follow the save's own)."""
    return _PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


class WorksetRepository:
    def __init__(self, conn: Connection, seen: list[Workset], outbox: OutboxWriter | None = None) -> None:
        self._conn = conn
        # With an outbox (a unit of work's), the workset's pending events go in with the statement that
        # saves it; they stay pending on the workset (cleared by the commit), and the commit skips them.
        self._outbox = outbox
        # Aggregates touched in this unit of work; their pending events go to the outbox on commit.
        self._seen = seen

    async def get(self, workset_id: str, *, for_update: bool = False) -> Workset:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(f"SELECT * FROM worksets WHERE id = $1{lock}", workset_id)
        if row is None:
            raise WorksetNotFound(f"workset {workset_id!r} does not exist")
        ws = _from_row(row)
        self._seen.append(ws)
        return ws

    async def get_with(self, workset_id: str, columns: str) -> tuple[Workset, asyncpg.Record]:
        """The workset read and locked (FOR UPDATE), and `columns` (select-list items, where `w` is the
        workset's row and $1 its id) read by the same statement: one round trip for both."""
        row = await self._conn.fetchrow(
            f"SELECT w.*, {columns} FROM worksets w WHERE w.id = $1 FOR UPDATE OF w", workset_id
        )
        if row is None:
            raise WorksetNotFound(f"workset {workset_id!r} does not exist")
        ws = _from_row(row)
        self._seen.append(ws)
        return ws, row

    async def get_changed(self, change: WorksetChange) -> Workset | None:
        """Run `change` and read the workset it names, locked (FOR UPDATE), in one statement; None when
        it changed nothing (its WHERE found no row), and then nothing is locked or read. The change takes
        its row's locks first, then the workset's row lock is taken: the order of a change made by one
        statement and `get(for_update=True)` by the next, one round trip fewer."""
        row = await self._conn.fetchrow(
            f"""WITH changed AS ({change.sql})
                SELECT w.* FROM changed JOIN worksets w ON w.id = changed.workset_id FOR UPDATE OF w""",
            *change.args,
        )
        if row is None:
            return None
        ws = _from_row(row)
        self._seen.append(ws)
        return ws

    async def get_changed_with(
        self, change: WorksetChange, columns: str, joins: str = ""
    ) -> tuple[Workset, asyncpg.Record] | None:
        """`get_changed`, with `columns` (select-list items, where `w` is the workset's row and `changed` the
        change's RETURNING row; `joins` may add tables) read by the same statement. They see the database as
        the statement began: not the change itself, whose new values only `changed` has."""
        row = await self._conn.fetchrow(
            f"""WITH changed AS ({change.sql})
                SELECT w.*, {columns} FROM changed JOIN worksets w ON w.id = changed.workset_id {joins}
                FOR UPDATE OF w""",
            *change.args,
        )
        if row is None:
            return None
        ws = _from_row(row)
        self._seen.append(ws)
        return ws, row

    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> Workset | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM worksets WHERE tenant_id = $1 AND idempotency_key = $2", tenant_id, key
        )
        return _from_row(row) if row else None

    async def add(self, ws: Workset) -> None:
        # The row and its history rows in one statement (one round trip).
        events = self._outbox.unwritten(ws.pending_events) if self._outbox is not None else []
        await self._conn.execute(
            """WITH added AS (
                 INSERT INTO worksets (id, tenant_id, name, state, version, region, priority, spec,
                                       idempotency_key, correlation_id, max_retries, max_duration_seconds,
                                       idempotency_fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13)
                 RETURNING id
               )"""
            + (", " + outbox_cte(21) if events else "")
            + """
               INSERT INTO workset_history (workset_id, version, from_state, to_state, actor, reason, event_id, at)
               SELECT added.id, h.version, h.from_state, h.to_state, h.actor, h.reason, h.event_id, h.at
               FROM added, unnest($14::int[], $15::text[], $16::text[], $17::text[], $18::text[], $19::uuid[],
                                  $20::timestamptz[]) AS h (version, from_state, to_state, actor, reason, event_id, at)""",
            ws.id,
            ws.tenant_id,
            ws.name,
            ws.state.value,
            len(ws.pending_transitions),
            ws.region,
            ws.priority,
            json.dumps(ws.spec),
            ws.idempotency_key,
            ws.correlation_id,
            ws.max_retries,
            ws.max_duration_seconds,
            ws.idempotency_fingerprint,
            *_history_arrays(ws, base_version=0),
            *(OutboxWriter.columns(events) if events else []),
        )
        if events and self._outbox is not None:
            self._outbox.written(events)
        ws.version = len(ws.pending_transitions)
        ws.pending_transitions.clear()
        self._seen.append(ws)

    async def save(self, ws: Workset, *with_: SavedWith) -> asyncpg.Record | None:
        """Write the changes made since `get`; fails if someone else saved in between.

        Every save bumps the version (a transition adds one per step of history), so a change
        without a transition (e.g. a cancel request) still conflicts with a racing writer. `with_`:
        changes written by the same statement (`SavedWith`); returns the row of the one that `returns`."""
        new_version = ws.version + max(1, len(ws.pending_transitions))
        history = _history_arrays(ws, base_version=ws.version)
        events = self._outbox.unwritten(ws.pending_events) if self._outbox is not None else []
        args: list[Any] = [
            ws.state.value,
            new_version,
            ws.priority,
            json.dumps(ws.spec),
            ws.id,
            ws.version,
            ws.cluster,
            ws.attempt,
            ws.retry_count,
            ws.max_retries,
            ws.cancel_requested_by,
            ws.max_duration_seconds,
            ws.memory_multiplier,
            ws.placement_reason,
            json.dumps(ws.placement_scores) if ws.placement_scores is not None else None,
            *history,
            *(OutboxWriter.columns(events) if events else []),
        ]
        first, more, returns, requires = "", "", None, ""
        for change in with_:
            if change.before:
                first += _numbered_from(change.before, len(args)) + ", "
            if change.requires:
                requires += f" AND EXISTS (SELECT 1 FROM {change.requires})"
            more += ", " + _numbered_from(change.ctes, len(args))
            args.extend(change.args)
            returns = change.returns or returns
        # The row, its history rows and its events in one statement (one round trip): history and events
        # are inserted only if the version check let the UPDATE through. Without events, no outbox insert
        # (its trigger would NOTIFY the relay for nothing).
        sql = (
            "WITH "
            + first
            + """updated AS (
                 UPDATE worksets SET state = $1, version = $2, priority = $3, spec = $4::jsonb, updated_at = now(),
                        cluster = $7, attempt = $8, retry_count = $9, max_retries = $10,
                        cancel_requested_by = $11, max_duration_seconds = $12, memory_multiplier = $13,
                        placement_reason = $14, placement_scores = $15::jsonb,
                        queued_at = CASE WHEN $1 = 'queued' AND state <> 'queued' THEN now() ELSE queued_at END
                 WHERE id = $5 AND version = $6"""
            + requires
            + """
                 RETURNING id
               ), history AS (
                 INSERT INTO workset_history (workset_id, version, from_state, to_state, actor, reason, event_id, at)
                 SELECT $5, h.version, h.from_state, h.to_state, h.actor, h.reason, h.event_id, h.at
                 FROM unnest($16::int[], $17::text[], $18::text[], $19::text[], $20::text[], $21::uuid[],
                             $22::timestamptz[]) AS h (version, from_state, to_state, actor, reason, event_id, at)
                 WHERE EXISTS (SELECT 1 FROM updated)
               )"""
            + (", " + outbox_cte(23, if_exists="updated") if events else "")
            + more
        )
        row: asyncpg.Record | None = None
        if returns is None:
            updated = await self._conn.fetchval(sql + " SELECT count(*) FROM updated", *args)
        else:
            row = await self._conn.fetchrow(
                sql
                + f""" SELECT (SELECT count(*) FROM updated) AS saved_rows, r.*
                           FROM (SELECT 1) AS one LEFT JOIN {returns} r ON true""",
                *args,
            )
            assert row is not None  # one row, whatever the CTE returned
            updated = row["saved_rows"]
        if updated != 1:
            raise ConcurrencyConflict(
                f"workset {ws.id} changed since version {ws.version} was read; reload it and try again"
            )
        if events and self._outbox is not None:
            self._outbox.written(events)
        ws.version = new_version
        ws.pending_transitions.clear()
        return row

    async def history(self, workset_id: str) -> list[HistoryRow]:
        rows = await self._conn.fetch(
            """SELECT version, from_state, to_state, actor, reason, event_id, at
               FROM workset_history WHERE workset_id = $1 ORDER BY version""",
            workset_id,
        )
        return [
            HistoryRow(
                version=r["version"],
                from_state=r["from_state"],
                to_state=r["to_state"],
                actor=r["actor"],
                reason=r["reason"],
                event_id=str(r["event_id"]) if r["event_id"] else None,
                at=r["at"],
            )
            for r in rows
        ]

    async def list_for_tenant(self, tenant_id: str | None, limit: int = 100) -> list[Workset]:
        rows = await self._conn.fetch(
            """SELECT * FROM worksets WHERE ($1::text IS NULL OR tenant_id = $1)
               ORDER BY created_at DESC, id LIMIT $2""",
            tenant_id,
            limit,
        )
        return [_from_row(r) for r in rows]

    async def page(
        self,
        *,
        tenant_id: str | None,
        state: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[tuple[Workset, datetime]]:
        """Newest first, keyset-paginated on (created_at, id): `after` is the last row of the previous page."""
        rows = await self._conn.fetch(
            """SELECT * FROM worksets
               WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR state = $2)
                 AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::text))
               ORDER BY created_at DESC, id DESC LIMIT $5""",
            tenant_id,
            state,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [(_from_row(r), r["created_at"]) for r in rows]

    async def count_by_state(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT state, count(*) AS n FROM worksets GROUP BY state")
        return {r["state"]: r["n"] for r in rows}


def _history_arrays(ws: Workset, *, base_version: int) -> list[list[Any]]:
    """The pending transitions as the columns of `workset_history` (version, from_state, to_state, actor,
    reason, event_id, at), one array each, for an INSERT ... SELECT FROM unnest(...)."""
    rows = [(base_version + i + 1, *_transition_columns(t)) for i, t in enumerate(ws.pending_transitions)]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(7)]


def _transition_columns(t: Transition) -> tuple[Any, ...]:
    return (
        t.from_state.value if t.from_state else None,
        t.to_state.value,
        t.actor,
        t.reason,
        t.event_id,
        t.at,
    )
