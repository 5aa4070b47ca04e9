"""Operator commands on regions: a forced failover and a fail-back. Each commits its change, its audit
row and (for a status change) its history row and region.health_changed event in one transaction;
the CLI and the portal API call these same functions.

A forced failover marks the region down at once (the scheduler re-routes its queued work and, after
STAMEN_REGION_LOST_AFTER_SECONDS, moves its running work) and keeps it down whatever the probes say,
until a fail-back. If the region holds the database primary, the regions service's coordinator
switches it over to a standby elsewhere (when STAMEN_REGION_DB_FAILOVER is on).

A fail-back lifts the override: the region comes back when the probes agree (the usual hysteresis).
With `database=True` it also asks the coordinator to move the database primary back to this region.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from stamen.bus.subjects import PLATFORM_TENANT
from stamen.domain.regions import RegionStatus
from stamen.errors import CodedError
from stamen.events.envelope import new_envelope
from stamen.events.types import RegionHealthChanged
from stamen.store.unit_of_work import UnitOfWork


class RegionNotFound(CodedError, LookupError):
    code = "REGION_NOT_FOUND"
    http_status = 404


class RegionAlreadyForced(CodedError, RuntimeError):
    code = "REGION_ALREADY_FAILED_OVER"
    http_status = 409


class NothingToFailBack(CodedError, RuntimeError):
    code = "REGION_NOTHING_TO_FAIL_BACK"
    http_status = 409


@dataclass(frozen=True)
class RegionCommandResult:
    region: str
    operation_id: int
    previous: str
    status: str
    forced_by: str | None
    switchover_requested: bool = False


async def _known(uow: UnitOfWork, region: str) -> None:
    names = [o.region for o in await uow.regions.overview()]
    if region not in names:
        known = ", ".join(names) or "none yet"
        raise RegionNotFound(
            f"no region named {region!r}; known regions: {known} (see `stamen region ls`)", region=region
        )


async def force_failover(pool: asyncpg.Pool, region: str, *, actor: str, reason: str) -> RegionCommandResult:
    async with UnitOfWork(pool) as uow:
        await _known(uow, region)
        row = await uow.regions.lock_health(region)
        if row is not None and row.forced_by:
            raise RegionAlreadyForced(
                f"region {region} was already failed over by {row.forced_by} ({row.forced_reason}); "
                f"fail it back first with `stamen region failback {region}`",
                region=region,
            )
        previous = row.status if row else RegionStatus.HEALTHY
        await uow.regions.set_forced(region, actor, reason)
        detail = f"forced failover by {actor}: {reason}"
        if previous is not RegionStatus.DOWN:
            event = new_envelope(
                RegionHealthChanged(status=RegionStatus.DOWN, detail=detail, previous=previous, actor=actor),
                tenant_id=PLATFORM_TENANT,
                region=region,
            )
            await uow.regions.change_status(
                region,
                previous=previous,
                status=RegionStatus.DOWN,
                reason=detail,
                actor=actor,
                at=datetime.now(UTC),
                latency_ms=row.latency_ms if row else None,
                event_id=event.id,
            )
            uow.publish(event)
        op_id = await uow.regions.add_operation(
            region, "failover", actor=actor, reason=reason, detail={"previous_status": previous.value}
        )
        await uow.commit()
    return RegionCommandResult(region, op_id, previous.value, RegionStatus.DOWN.value, actor)


async def fail_back(
    pool: asyncpg.Pool, region: str, *, actor: str, reason: str, database: bool = False
) -> RegionCommandResult:
    async with UnitOfWork(pool) as uow:
        await _known(uow, region)
        row = await uow.regions.lock_health(region)
        forced = row is not None and bool(row.forced_by)
        if not forced and not database:
            raise NothingToFailBack(
                f"region {region} was not failed over by an operator (its status follows the probes); "
                "pass --database to move the database primary back to it",
                region=region,
            )
        status = row.status if row else RegionStatus.HEALTHY
        if forced:
            await uow.regions.set_forced(region, None, None)
        op_id = await uow.regions.add_operation(
            region,
            "failback",
            actor=actor,
            reason=reason,
            detail={
                "override_cleared": forced,
                "forced_by": row.forced_by if row else None,
                "database": database,
                # The status itself moves when the regions service sees enough good probe rounds.
                "status_now": status.value,
            },
        )
        if database:
            await uow.regions.add_operation(
                region, "database_switchover", actor=actor, reason=reason, outcome="requested",
                detail={"to_region": region, "failback_operation": op_id},
            )  # fmt: skip
        await uow.commit()
    return RegionCommandResult(region, op_id, status.value, status.value, None, switchover_requested=database)
