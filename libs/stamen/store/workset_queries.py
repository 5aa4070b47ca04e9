"""WorksetQueries: the read side the portal's pages need (filtered keyset pages, counts, per-day series,
queue positions, step progress). SQL only: who may see what is decided by the caller, which passes the
tenant to scope to (None = every tenant, for operators)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from stamen.store.db import Connection

Sort = Literal["newest", "oldest", "name", "name_desc"]
# Each sort: its key column and direction. Pages continue after the last row's (key, id), so any page is
# one index range read (migration 0017), however deep: page 50 costs what page 1 costs.
SORTS: dict[str, tuple[str, str]] = {
    "newest": ("created_at", "DESC"),
    "oldest": ("created_at", "ASC"),
    "name": ("name", "ASC"),
    "name_desc": ("name", "DESC"),
}
_LIST_COLUMNS = """id, tenant_id, name, state, priority, pipeline, region, cluster, created_at, updated_at,
                   attempt, retry_count, max_retries"""


@dataclass(frozen=True)
class WorksetFilter:
    tenant_id: str | None  # None: every tenant (operators)
    states: tuple[str, ...] = ()
    priority: str | None = None
    pipeline: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    search: str | None = None  # words (or their beginnings) of the name or of sample ids, any case


@dataclass(frozen=True)
class WorksetRow:
    id: str
    tenant_id: str
    name: str
    state: str
    priority: str
    pipeline: str | None
    region: str
    cluster: str | None
    created_at: datetime
    updated_at: datetime
    attempt: int
    retry_count: int
    max_retries: int
    extra: dict[str, Any] = field(default_factory=dict)

    def sort_key(self, sort: str) -> Any:
        return self.created_at if SORTS[sort][0] == "created_at" else self.name


def _row(r: Any, **extra: Any) -> WorksetRow:
    return WorksetRow(
        id=r["id"],
        tenant_id=r["tenant_id"],
        name=r["name"],
        state=r["state"],
        priority=r["priority"],
        pipeline=r["pipeline"],
        region=r["region"],
        cluster=r["cluster"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        attempt=r["attempt"],
        retry_count=r["retry_count"],
        max_retries=r["max_retries"],
        extra=extra,
    )


# A search narrower than this is read through the search index and sorted; a broader one is read in the
# page's order, stopping at a page's worth (PostgreSQL cannot tell the two apart from its statistics).
NARROW_SEARCH = 1000
_WORD = re.compile(r"[a-z0-9]+")
_QUEUE_ORDER = "CASE priority WHEN 'urgent' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END, queued_at, id"


def search_query(text: str) -> str | None:
    """The tsquery of a search box: every word of it, each as a prefix (`hg002 l1` -> `hg002:* & l1:*`);
    None when it holds no word."""
    words = _WORD.findall(text.lower())[:8]
    return " & ".join(f"{w}:*" for w in words) or None


class WorksetQueries:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def page(
        self, f: WorksetFilter, *, sort: str = "newest", after: tuple[Any, str] | None = None, limit: int = 50
    ) -> list[WorksetRow]:
        column, direction = SORTS[sort]
        cmp = "<" if direction == "DESC" else ">"
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        where = []
        if f.tenant_id is not None:
            where.append(f"tenant_id = {arg(f.tenant_id)}")
        tsquery = search_query(f.search) if f.search else None
        if f.search and tsquery is None:
            return []  # nothing searchable in it (only punctuation): nothing matches
        narrow = False
        if tsquery:
            # The words are in workset_search (migration 0026), one row per workset. A narrow search takes
            # its matches from the search index (the hits below); a broad one reads each row's words by its
            # key as the page's order walks the worksets (a subquery PostgreSQL cannot turn into a join).
            narrow = await self._narrow(f.tenant_id, tsquery)
            words = f"to_tsquery('simple', {arg(tsquery)})"
            where.append(
                f"id IN (SELECT workset_id FROM workset_search WHERE search_vector @@ {words})"
                if narrow
                else f"(SELECT s.search_vector FROM workset_search s WHERE s.workset_id = worksets.id) @@ {words}"
            )
        if f.states:
            where.append(f"state = ANY({arg(list(f.states))}::text[])")
        if f.priority:
            where.append(f"priority = {arg(f.priority)}")
        if f.pipeline:
            where.append(f"pipeline = {arg(f.pipeline)}")
        if f.created_from:
            where.append(f"created_at >= {arg(f.created_from)}")
        if f.created_before:
            where.append(f"created_at < {arg(f.created_before)}")
        if after is not None:
            where.append(f"({column}, id) {cmp} ({arg(after[0])}, {arg(after[1])})")
        order = f"ORDER BY {column} {direction}, id {direction} LIMIT {arg(limit)}"
        condition = " WHERE " + " AND ".join(where) if where else ""
        sql = f"SELECT {_LIST_COLUMNS} FROM worksets{condition} {order}"
        if tsquery and narrow:
            # Few matches: take them all from the search index, then sort (MATERIALIZED keeps PostgreSQL
            # from walking the whole tenant in page order looking for them).
            sql = f"WITH hits AS MATERIALIZED (SELECT {_LIST_COLUMNS} FROM worksets{condition}) SELECT * FROM hits {order}"
        return [_row(r) for r in await self._conn.fetch(sql, *args)]

    async def _narrow(self, tenant_id: str | None, tsquery: str) -> bool:
        found = await self._conn.fetchval(
            """SELECT count(*) FROM (SELECT 1 FROM workset_search s JOIN worksets w ON w.id = s.workset_id
                   WHERE ($1::text IS NULL OR w.tenant_id = $1) AND s.search_vector @@ to_tsquery('simple', $2)
                   LIMIT $3) AS m""",
            tenant_id,
            tsquery,
            NARROW_SEARCH + 1,
        )
        return int(found) <= NARROW_SEARCH

    async def rows(self, workset_ids: list[str]) -> dict[str, WorksetRow]:
        rows = await self._conn.fetch(
            f"SELECT {_LIST_COLUMNS} FROM worksets WHERE id = ANY($1::text[])", workset_ids
        )
        return {r["id"]: _row(r) for r in rows}

    async def counts_by_state(self, tenant_id: str | None) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT state, count(*) AS n FROM worksets WHERE ($1::text IS NULL OR tenant_id = $1) GROUP BY state",
            tenant_id,
        )
        return {r["state"]: int(r["n"]) for r in rows}

    async def created_per_day(self, tenant_id: str | None, since: datetime) -> dict[date, int]:
        rows = await self._conn.fetch(
            """SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM worksets
               WHERE ($1::text IS NULL OR tenant_id = $1) AND created_at >= $2 GROUP BY day""",
            tenant_id,
            since,
        )
        return {r["day"]: int(r["n"]) for r in rows}

    async def cost_per_day(self, tenant_id: str | None, since: datetime) -> dict[date, tuple[float, float]]:
        """Metered cost and vCPU-hours of the worksets that finished each day (workset_actuals)."""
        rows = await self._conn.fetch(
            """SELECT (a.recorded_at AT TIME ZONE 'UTC')::date AS day, coalesce(sum(a.cost_usd), 0) AS cost,
                      coalesce(sum(a.vcpu_hours), 0) AS vcpu_hours
               FROM workset_actuals a JOIN worksets w ON w.id = a.workset_id
               WHERE a.recorded_at >= $2 AND ($1::text IS NULL OR w.tenant_id = $1) GROUP BY day""",
            tenant_id,
            since,
        )
        return {r["day"]: (float(r["cost"]), float(r["vcpu_hours"])) for r in rows}

    async def metered_steps(
        self, tenant_id: str | None, start: datetime, end: datetime
    ) -> list[tuple[str | None, float | None, float, int]]:
        """CPU seconds of the step runs that ended in [start, end), summed per cluster: (region, price
        factor, cpu seconds, steps). Cost is linear in CPU time, so metering these sums gives what metering
        every step would (stamen.worksets.cost.metered_cost), in one row per cluster."""
        rows = await self._conn.fetch(
            """SELECT c.region, c.price_factor, sum((s.resources ->> 'cpu_seconds')::float8) AS cpu,
                      count(*) AS n
               FROM step_runs s JOIN worksets w ON w.id = s.workset_id LEFT JOIN clusters c ON c.name = s.cluster
               WHERE s.ended_at >= $2 AND s.ended_at < $3 AND ($1::text IS NULL OR w.tenant_id = $1)
               GROUP BY s.cluster, c.region, c.price_factor""",
            tenant_id,
            start,
            end,
        )
        return [(r["region"], r["price_factor"], float(r["cpu"] or 0.0), int(r["n"])) for r in rows]

    async def running(self, tenant_id: str | None, limit: int = 10) -> list[WorksetRow]:
        rows = await self._conn.fetch(
            f"""SELECT {_LIST_COLUMNS} FROM worksets
                WHERE state IN ('scheduled', 'running') AND ($1::text IS NULL OR tenant_id = $1)
                ORDER BY updated_at DESC LIMIT $2""",
            tenant_id,
            limit,
        )
        return [_row(r) for r in rows]

    async def queued(self, tenant_id: str | None, limit: int = 10) -> list[WorksetRow]:
        """The queue in the order admission takes one tenant's worksets (priority, then age); `position`
        (1 = next) is among the worksets of the same tenant: fair share interleaves tenants, and a
        customer is told nothing about other tenants' queues."""
        if tenant_id is not None:  # the head of one tenant's queue: an index range (worksets_tenant_queue)
            rows = await self._conn.fetch(
                f"""SELECT {_LIST_COLUMNS}, queued_at, row_number() OVER (ORDER BY {_QUEUE_ORDER}) AS position
                    FROM worksets WHERE state = 'queued' AND tenant_id = $1 ORDER BY {_QUEUE_ORDER} LIMIT $2""",
                tenant_id,
                limit,
            )
        else:
            rows = await self._conn.fetch(
                f"""SELECT {_LIST_COLUMNS}, queued_at,
                           row_number() OVER (PARTITION BY tenant_id ORDER BY {_QUEUE_ORDER}) AS position
                    FROM worksets WHERE state = 'queued' ORDER BY {_QUEUE_ORDER} LIMIT $1""",
                limit,
            )
        return [_row(r, position=int(r["position"]), queued_at=r["queued_at"]) for r in rows]

    async def retry_waits(self, tenant_id: str | None, limit: int = 10) -> list[WorksetRow]:
        """Worksets waiting for a retry, soonest first, with when it is due (the scheduler's timer)."""
        rows = await self._conn.fetch(
            f"""SELECT {_LIST_COLUMNS},
                       (SELECT min(t.due_at) FROM timers t
                        WHERE t.workset_id = w.id AND t.fired_at IS NULL) AS due_at
                FROM worksets w WHERE state = 'retry_wait' AND ($1::text IS NULL OR tenant_id = $1)
                ORDER BY due_at NULLS LAST, id LIMIT $2""",
            tenant_id,
            limit,
        )
        return [_row(r, due_at=r["due_at"]) for r in rows]

    async def step_runs(self, workset_id: str) -> list[dict[str, Any]]:
        """Every step run of every attempt, in order (the detail page's progress and log tails)."""
        rows = await self._conn.fetch(
            """SELECT attempt, step, step_index, cluster, state, exit_code, signal, reason, log_tail,
                      resources, started_at, ended_at
               FROM step_runs WHERE workset_id = $1 ORDER BY attempt, step_index""",
            workset_id,
        )
        out = []
        for r in rows:
            doc = dict(r)
            doc["resources"] = (
                json.loads(r["resources"]) if isinstance(r["resources"], str) else r["resources"]
            )
            out.append(doc)
        return out
