"""ActualsRepository: the resources a finished workset really used, summed over its step runs, and what
they cost at list prices (the same metering as the usage report: stamen.worksets.cost.metered_cost)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stamen.store.db import Connection
from stamen.store.worksets import SavedWith
from stamen.worksets.cost import MeteredStep, metered_cost

# A workset's step runs as its actuals count them; $1: the workset.
STEP_COSTS_COLUMNS = """s.attempt, (s.resources->>'cpu_seconds')::float8 AS cpu_seconds,
    (s.resources->>'elapsed_seconds')::float8 AS elapsed_seconds,
    (s.resources->>'max_rss_mb')::float8 AS max_rss_mb, c.region, c.price_factor"""
STEP_COSTS_FROM = "FROM step_runs s LEFT JOIN clusters c ON c.name = s.cluster WHERE s.workset_id = $1"
_ACTUALS_COLUMNS = """(workset_id, attempts, step_runs, cpu_seconds, vcpu_hours, elapsed_seconds, max_rss_mb,
    cost_usd, wall_seconds)"""
_ACTUALS_UPSERT = """ON CONFLICT (workset_id) DO UPDATE SET attempts = EXCLUDED.attempts,
    step_runs = EXCLUDED.step_runs, cpu_seconds = EXCLUDED.cpu_seconds,
    vcpu_hours = EXCLUDED.vcpu_hours, elapsed_seconds = EXCLUDED.elapsed_seconds,
    max_rss_mb = EXCLUDED.max_rss_mb, cost_usd = EXCLUDED.cost_usd,
    wall_seconds = EXCLUDED.wall_seconds, recorded_at = now()"""


@dataclass(frozen=True)
class StepCost:
    """One step run as a workset's actuals count it."""

    attempt: int
    cpu_seconds: float | None
    elapsed_seconds: float | None
    max_rss_mb: float | None
    region: str | None
    price_factor: float | None

    @classmethod
    def of(cls, r: Any) -> StepCost:
        return cls(
            r["attempt"],
            r["cpu_seconds"],
            r["elapsed_seconds"],
            r["max_rss_mb"],
            r["region"],
            r["price_factor"],
        )


def _sum(values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return sum(measured) if measured else None


def _actuals(steps: Sequence[StepCost]) -> tuple[Any, ...]:
    """attempts, step_runs, cpu_seconds, vcpu_hours, elapsed_seconds, max_rss_mb, cost_usd of `steps`."""
    cpu = _sum([s.cpu_seconds for s in steps])
    rss = [s.max_rss_mb for s in steps if s.max_rss_mb is not None]
    cost = metered_cost(
        [MeteredStep(cpu_seconds=s.cpu_seconds, region=s.region, price_factor=s.price_factor) for s in steps]
    )
    return (
        len({s.attempt for s in steps}),
        len(steps),
        cpu,
        None if cpu is None else cpu / 3600.0,
        _sum([s.elapsed_seconds for s in steps]),
        max(rss) if rss else None,
        cost.cost_usd if cost.steps_measured else None,
    )


class ActualsRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def record_from_steps(self, workset_id: str) -> None:
        """Every step run of every attempt (failed attempts cost too) into workset_actuals, with the wall
        time of every attempt's slot (the attempt finishing now counts up to now)."""
        steps = await self._conn.fetch(f"SELECT {STEP_COSTS_COLUMNS} {STEP_COSTS_FROM}", workset_id)
        await self._conn.execute(
            f"INSERT INTO workset_actuals {_ACTUALS_COLUMNS} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
            "(SELECT sum(extract(epoch FROM coalesce(released_at, clock_timestamp()) - admitted_at)) "
            f"FROM workset_runs WHERE workset_id = $1)) {_ACTUALS_UPSERT}",
            workset_id,
            *_actuals([StepCost.of(r) for r in steps]),
        )

    @staticmethod
    def recording(workset_id: str, steps: Sequence[StepCost]) -> SavedWith:
        """`record_from_steps` written by the statement that saves the workset, after `SlotLedger.releasing`
        in the same statement (whose `released_run` it reads: the run it ends counts up to its release),
        from the workset's step runs read earlier in the transaction (`steps`)."""
        return SavedWith(
            f"""actuals AS (
                 INSERT INTO workset_actuals {_ACTUALS_COLUMNS}
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8,
                        (SELECT sum(extract(epoch FROM coalesce(r.released_at, clock_timestamp()) - r.admitted_at))
                         FROM (SELECT admitted_at, released_at FROM workset_runs
                               WHERE workset_id = $1 AND attempt NOT IN (SELECT attempt FROM released_run)
                               UNION ALL SELECT admitted_at, released_at FROM released_run) AS r)
                 WHERE EXISTS (SELECT 1 FROM updated) {_ACTUALS_UPSERT})""",
            (workset_id, *_actuals(steps)),
        )

    async def for_workset(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM workset_actuals WHERE workset_id = $1", workset_id)
        return dict(row) if row else None
