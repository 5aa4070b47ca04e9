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


def _from_row(row: asyncpg.Record, *, to_save: bool = True) -> Workset:
    """`to_save`: the workset may be saved (its `stored` columns are kept, for the save to compare)."""
    spec = row["spec"]
    scores = row["placement_scores"]
    ws = Workset(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        state=WorksetState(row["state"]),
        region=row["region"],
        correlation_id=row["correlation_id"],
        priority=row["priority"],
        spec=json.loads(spec),
        idempotency_key=row["idempotency_key"],
        idempotency_fingerprint=row["idempotency_fingerprint"],
        version=row["version"],
        cluster=row["cluster"],
        placement_reason=row["placement_reason"],
        placement_scores=json.loads(scores) if scores else None,
        attempt=row["attempt"],
        retry_count=row["retry_count"],
        max_retries=row["max_retries"],
        cancel_requested_by=row["cancel_requested_by"],
        max_duration_seconds=row["max_duration_seconds"],
        memory_multiplier=row["memory_multiplier"],
    )
    if to_save:  # the JSON columns parsed again (not the workset's own): a change made in place is seen
        ws.stored = _stored(ws, json.loads(spec), json.loads(scores) if scores else None)
    return ws


# The columns a save may change, in the order of `_stored`'s tuple, with the cast of their parameter.
_SAVED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("state", ""),
    ("priority", ""),
    ("spec", "::jsonb"),
    ("cluster", ""),
    ("attempt", ""),
    ("retry_count", ""),
    ("max_retries", ""),
    ("cancel_requested_by", ""),
    ("max_duration_seconds", ""),
    ("memory_multiplier", ""),
    ("placement_reason", ""),
    ("placement_scores", "::jsonb"),
)
_STATE, _SPEC, _SCORES = 0, 2, 11


def _stored(ws: Workset, spec: dict[str, Any], scores: dict[str, float] | None) -> tuple[Any, ...]:
    """The saved columns' values as the store holds them (`spec`, `scores`: copies, not the workset's own)."""
    return (
        ws.state,
        ws.priority,
        spec,
        ws.cluster,
        ws.attempt,
        ws.retry_count,
        ws.max_retries,
        ws.cancel_requested_by,
        ws.max_duration_seconds,
        ws.memory_multiplier,
        ws.placement_reason,
        scores,
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

    async def get_locked_by(self, sql: str, *args: Any) -> tuple[Workset, asyncpg.Record] | None:
        """The workset that `sql` reads and locks (its row has the workset's columns, `w.*`, and any more), with
        that row; None when it reads none."""
        row = await self._conn.fetchrow(sql, *args)
        if row is None:
            return None
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

    async def get_changed_all_with(
        self, change: WorksetChange, columns: str, joins: str = ""
    ) -> list[tuple[Workset, asyncpg.Record]]:
        """`get_changed_with` for a change of several rows (each naming a different workset): every workset it
        names read and locked, in the order of their ids (so that two transactions locking some of the same
        worksets this way take them in the same order), with `columns`; none when it changed nothing."""
        rows = await self._conn.fetch(
            f"""WITH changed AS ({change.sql})
                SELECT w.*, {columns} FROM changed JOIN worksets w ON w.id = changed.workset_id {joins}
                ORDER BY w.id FOR UPDATE OF w""",
            *change.args,
        )
        found = []
        for row in rows:
            ws = _from_row(row)
            self._seen.append(ws)
            found.append((ws, row))
        return found

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
        without a transition (e.g. a cancel request) still conflicts with a racing writer. Only the columns
        that differ from what the store holds (`Workset.stored`) are written: an unchanged spec is not sent,
        parsed or stored again, and its generated columns are not computed again. `with_`: changes written
        by the same statement (`SavedWith`); returns the row of the one that `returns`."""
        new_version = ws.version + max(1, len(ws.pending_transitions))
        events = self._outbox.unwritten(ws.pending_events) if self._outbox is not None else []
        now = _stored(ws, ws.spec, ws.placement_scores)
        # What the store will hold of the JSON columns: copies (parsed from what is sent) when they are written.
        stored_spec, stored_scores = (
            (ws.stored[_SPEC], ws.stored[_SCORES]) if ws.stored is not None else ({}, None)
        )
        args: list[Any] = [ws.id, ws.version, new_version]
        # No index holds `version` or `updated_at` (migration 0025): a save that changes nothing else indexed (a
        # step's end) is a HOT update, written beside the old row with no index entry; the reconcilers' index
        # holds `state_entered_at`, which moves with the state only.
        sets = ["version = $3", "updated_at = now()"]
        for i, (column, cast) in enumerate(_SAVED_COLUMNS):
            if ws.stored is not None and now[i] == ws.stored[i]:
                continue
            value = now[i]
            if i == _STATE:
                value = ws.state.value
                if ws.state is WorksetState.QUEUED:
                    sets.append("queued_at = CASE WHEN state <> 'queued' THEN now() ELSE queued_at END")
            elif i == _SPEC:
                value = json.dumps(ws.spec)
                stored_spec = json.loads(value)
            elif i == _SCORES and ws.placement_scores is not None:
                value = json.dumps(ws.placement_scores)
                stored_scores = json.loads(value)
            elif i == _SCORES:
                stored_scores = None
            args.append(value)
            sets.append(f"{column} = ${len(args)}{cast}")
            if i == _STATE:  # (a save without `stored` may write the state it already has)
                sets.append(
                    f"state_entered_at = CASE WHEN state <> ${len(args)} THEN now() ELSE state_entered_at END"
                )
        # History rows and events are inserted only if the version check let the UPDATE through. Without a
        # transition, no history insert; without events, no outbox insert (its trigger would NOTIFY the relay
        # for nothing).
        history = ""
        if ws.pending_transitions:
            n = len(args)
            history = f""", history AS (
                 INSERT INTO workset_history (workset_id, version, from_state, to_state, actor, reason, event_id, at)
                 SELECT $1, h.version, h.from_state, h.to_state, h.actor, h.reason, h.event_id, h.at
                 FROM unnest(${n + 1}::int[], ${n + 2}::text[], ${n + 3}::text[], ${n + 4}::text[], ${n + 5}::text[],
                             ${n + 6}::uuid[], ${n + 7}::timestamptz[])
                      AS h (version, from_state, to_state, actor, reason, event_id, at)
                 WHERE EXISTS (SELECT 1 FROM updated)
               )"""
            args.extend(_history_arrays(ws, base_version=ws.version))
        if events:
            history += ", " + outbox_cte(len(args) + 1, if_exists="updated")
            args.extend(OutboxWriter.columns(events))
        first, more, returns, requires = "", "", None, ""
        for change in with_:
            if change.before:
                first += _numbered_from(change.before, len(args)) + ", "
            if change.requires:
                requires += f" AND EXISTS (SELECT 1 FROM {change.requires})"
            more += ", " + _numbered_from(change.ctes, len(args))
            args.extend(change.args)
            returns = change.returns or returns
        # The row, its history rows, its events and `with_` in one statement (one round trip).
        sql = (
            f"WITH {first}updated AS (\n  UPDATE worksets SET {', '.join(sets)} WHERE id = $1 AND version = $2"
            f"{requires} RETURNING id){history}{more}"
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
        ws.stored = _stored(ws, stored_spec, stored_scores)
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
        return [_from_row(r, to_save=False) for r in rows]

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
        return [(_from_row(r, to_save=False), r["created_at"]) for r in rows]

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
