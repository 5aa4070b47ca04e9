"""ActualsRepository: the resources a finished workset really used, summed over its step runs, and what
they cost at list prices (the same metering as the usage report: stamen.worksets.cost.metered_cost)."""

from __future__ import annotations

from typing import Any

from stamen.store.db import Connection
from stamen.worksets.cost import MeteredStep, metered_cost


def _sum(values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return sum(measured) if measured else None


class ActualsRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def record_from_steps(self, workset_id: str) -> None:
        """Every step run of every attempt (failed attempts cost too) into workset_actuals, with the wall
        time of every attempt's slot (the attempt finishing now counts up to now)."""
        steps = await self._conn.fetch(
            """SELECT s.attempt, (s.resources->>'cpu_seconds')::float8 AS cpu_seconds,
                      (s.resources->>'elapsed_seconds')::float8 AS elapsed_seconds,
                      (s.resources->>'max_rss_mb')::float8 AS max_rss_mb, c.region, c.price_factor
               FROM step_runs s LEFT JOIN clusters c ON c.name = s.cluster WHERE s.workset_id = $1""",
            workset_id,
        )
        cpu = _sum([r["cpu_seconds"] for r in steps])
        rss = [r["max_rss_mb"] for r in steps if r["max_rss_mb"] is not None]
        cost = metered_cost(
            [
                MeteredStep(cpu_seconds=r["cpu_seconds"], region=r["region"], price_factor=r["price_factor"])
                for r in steps
            ]
        )
        await self._conn.execute(
            """INSERT INTO workset_actuals (workset_id, attempts, step_runs, cpu_seconds, vcpu_hours,
                                            elapsed_seconds, max_rss_mb, cost_usd, wall_seconds)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                       (SELECT sum(extract(epoch FROM coalesce(released_at, clock_timestamp()) - admitted_at))
                        FROM workset_runs WHERE workset_id = $1))
               ON CONFLICT (workset_id) DO UPDATE SET attempts = EXCLUDED.attempts,
                   step_runs = EXCLUDED.step_runs, cpu_seconds = EXCLUDED.cpu_seconds,
                   vcpu_hours = EXCLUDED.vcpu_hours, elapsed_seconds = EXCLUDED.elapsed_seconds,
                   max_rss_mb = EXCLUDED.max_rss_mb, cost_usd = EXCLUDED.cost_usd,
                   wall_seconds = EXCLUDED.wall_seconds, recorded_at = now()""",
            workset_id,
            len({r["attempt"] for r in steps}),
            len(steps),
            cpu,
            None if cpu is None else cpu / 3600.0,
            _sum([r["elapsed_seconds"] for r in steps]),
            max(rss) if rss else None,
            cost.cost_usd if cost.steps_measured else None,
        )

    async def for_workset(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM workset_actuals WHERE workset_id = $1", workset_id)
        return dict(row) if row else None
