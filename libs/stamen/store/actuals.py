"""ActualsRepository: the resources a finished workset really used, summed over its step runs."""

from __future__ import annotations

from typing import Any

from stamen.store.db import Connection


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

    async def for_workset(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM workset_actuals WHERE workset_id = $1", workset_id)
        return dict(row) if row else None
