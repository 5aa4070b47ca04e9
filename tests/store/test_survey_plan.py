"""The scheduler's survey runs at the start of every pass: what it reads must not grow with the worksets that
have finished (the history), only with the work in flight."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from stamen.store.survey import survey


class SentStatement:
    """Catches the survey's statement (not a copy that could drift) and answers nothing."""

    def __init__(self) -> None:
        self.sql = ""
        self.args: tuple[Any, ...] = ()

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self.sql, self.args = sql, args


def scans(node: dict[str, Any]) -> list[str]:
    """Each scan of the plan: its node type, its table and the index it reads, if any."""
    found = (
        [f"{node['Node Type']} on {node.get('Relation Name') or ''} {node.get('Index Name') or ''}".strip()]
        if "Scan" in node["Node Type"]
        else []
    )
    for child in node.get("Plans", []):
        found += scans(child)
    return found


async def test_the_survey_reads_only_the_worksets_in_flight(pool: asyncpg.Pool) -> None:
    sent = SentStatement()
    try:
        await survey(sent, global_max=10, submit_grace_seconds=10.0)  # type: ignore[arg-type]
    except (AssertionError, TypeError):
        pass  # it got no row back: only its statement was wanted
    async with pool.acquire() as conn:
        # 15,000 finished worksets written before 15,000 queued ones (the order a table is filled in): with
        # half the table queued, "is anything queued?" asked of worksets was a sequential read from the start.
        # And 200 admitted, which the survey asks four questions of: each read the whole of
        # worksets_tenant_state (no index led by the state) before migration 0024's worksets_admitted.
        await conn.execute(
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               SELECT 'ws-' || lpad(g::text, 6, '0'), 't' || (g % 20), 'w',
                      CASE WHEN g > 29800 THEN (ARRAY['scheduled', 'running'])[1 + g % 2]
                           WHEN g > 15000 THEN 'queued' ELSE 'completed' END, 'us-west-2', 'normal',
                      jsonb_build_object('samples', jsonb_build_array(jsonb_build_object('id', 's' || g))),
                      gen_random_uuid(), now()
               FROM generate_series(1, 30000) g"""
        )
        await conn.execute("ANALYZE")
        plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sent.sql}", *sent.args))[0]
    read = [scan for scan in scans(plan["Plan"]) if " on worksets" in scan]
    assert "Seq Scan on worksets" not in read, read
    assert read and all(scan.endswith("worksets_admitted") for scan in read), read
