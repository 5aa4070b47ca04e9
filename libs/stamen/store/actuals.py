"""ActualsRepository: the resources a finished workset really used, summed over its step runs, and what
they cost at list prices (the same metering as the usage report: stamen.worksets.cost.metered_cost)."""

from __future__ import annotations

from typing import Any

from stamen.store.db import Connection
from stamen.worksets.cost import MeteredStep, metered_cost


class ActualsRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def record_from_steps(self, workset_id: str) -> None:
        """Sum every step run of every attempt (failed attempts cost too) into workset_actuals."""
        await self._conn.execute(
            """INSERT INTO workset_actuals (workset_id, attempts, step_runs, cpu_seconds, vcpu_hours,
                                            elapsed_seconds, max_rss_mb)
               SELECT $1, count(DISTINCT attempt), count(*),
                      sum((resources->>'cpu_seconds')::float8),
                      sum((resources->>'cpu_seconds')::float8) / 3600.0,
                      sum((resources->>'elapsed_seconds')::float8),
                      max((resources->>'max_rss_mb')::float8)
               FROM step_runs WHERE workset_id = $1
               ON CONFLICT (workset_id) DO UPDATE SET attempts = EXCLUDED.attempts,
                   step_runs = EXCLUDED.step_runs, cpu_seconds = EXCLUDED.cpu_seconds,
                   vcpu_hours = EXCLUDED.vcpu_hours, elapsed_seconds = EXCLUDED.elapsed_seconds,
                   max_rss_mb = EXCLUDED.max_rss_mb, recorded_at = now()""",
            workset_id,
        )
        steps = await self._conn.fetch(
            """SELECT (s.resources->>'cpu_seconds')::float8 AS cpu_seconds, c.region, c.price_factor
               FROM step_runs s LEFT JOIN clusters c ON c.name = s.cluster WHERE s.workset_id = $1""",
            workset_id,
        )
        metered = metered_cost(
            [MeteredStep(cpu_seconds=r["cpu_seconds"], region=r["region"], price_factor=r["price_factor"])
             for r in steps]
        )
        # Wall time: every attempt's slot, admission to release; the attempt finishing now counts up to now.
        await self._conn.execute(
            """UPDATE workset_actuals SET cost_usd = $2,
                   wall_seconds = (SELECT sum(extract(epoch FROM coalesce(released_at, clock_timestamp())
                                                     - admitted_at))
                                   FROM workset_runs WHERE workset_id = $1)
               WHERE workset_id = $1""",
            workset_id,
            metered.cost_usd,
        )

    async def for_workset(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM workset_actuals WHERE workset_id = $1", workset_id)
        return dict(row) if row else None
