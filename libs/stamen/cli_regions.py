"""`stamen region ls|show|history|failover|failback`: region health, its history, and the operator's
forced failover and fail-back (with an audit trail)."""

from __future__ import annotations

import asyncio
import getpass
import time
from dataclasses import asdict
from typing import Annotated, Any

import asyncpg
import typer

from stamen.cli import JsonOpt, StateDirOpt, _emit, _run
from stamen.cli_scheduler import _with_pool
from stamen.regions.commands import fail_back, force_failover
from stamen.regions.views import overview_json
from stamen.store.unit_of_work import UnitOfWork

region_app = typer.Typer(help="Region health, failover and fail-back.", no_args_is_help=True)
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="Who is acting (default: your user name).")]


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


@region_app.command("ls")
def region_ls(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Every region with its status, latency (moving average, p95) and clusters."""

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with UnitOfWork(pool) as uow:
            return [overview_json(o) for o in await uow.regions.overview()]

    rows = _run(as_json, _with_pool(state_dir, ls))
    lines = [f"{'REGION':<14} {'STATUS':<9} {'AVG ms':>7} {'P95 ms':>7}  CLUSTERS / REASON"]
    for r in rows:
        mark = "*" if r["primary"] else " "
        forced = f" [forced by {r['forced_by']}]" if r["forced_by"] else ""
        lines.append(
            f"{r['region'] + mark:<14} {r['status']:<9} {_ms(r['latency_ms']['average']):>7} "
            f"{_ms(r['latency_ms']['p95']):>7}  {', '.join(r['clusters']) or '-'}{forced}  ({r['reason']})"
        )
    _emit(
        as_json, rows, "\n".join(lines) if rows else "no regions known yet (is the regions service running?)"
    )


@region_app.command("show")
def region_show(region: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """One region: status and why, every probe of the last round, latency percentiles, recent changes."""

    async def show(pool: asyncpg.Pool) -> dict[str, Any]:
        from stamen.regions.commands import RegionNotFound

        async with UnitOfWork(pool) as uow:
            found = [o for o in await uow.regions.overview() if o.region == region]
            if not found:
                known = ", ".join(o.region for o in await uow.regions.overview()) or "none yet"
                raise RegionNotFound(f"no region named {region!r}; known regions: {known}")
            history = await uow.regions.history(region, limit=10)
            operations = await uow.regions.operations(region, limit=10)
        return {
            **overview_json(found[0]),
            "history": [asdict(h) for h in history],
            "operations": [asdict(o) for o in operations],
        }

    data = _run(as_json, _with_pool(state_dir, show))
    lat = data["latency_ms"]
    lines = [
        f"{data['region']}{' (primary)' if data['primary'] else ''}: {data['status']} since {data['since']}",
        f"  why: {data['reason']}",
        f"  latency ms: average {_ms(lat['average'])}, p50 {_ms(lat['p50'])}, p95 {_ms(lat['p95'])}, p99 {_ms(lat['p99'])}",
    ]
    if data["forced_by"]:
        lines.append(f"  forced down by {data['forced_by']}: {data['forced_reason']}")
    if data["last_round"]:
        lines.append(f"  last round: {data['last_round']['verdict']} ({data['last_round']['reason']})")
    for p in data["probes"]:
        ok = "ok  " if p["ok"] else "FAIL"
        lines.append(f"    {ok} {p['kind']:<8} {p['target']:<40} {_ms(p['latency_ms']):>7} ms  {p['detail']}")
    lines.append(f"  clusters: {', '.join(data['clusters']) or '-'}")
    for h in data["history"][:5]:
        lines.append(
            f"  {h['at']:%Y-%m-%d %H:%M:%S}  {h['from_status'] or '-'} -> {h['to_status']} by {h['actor']}: {h['reason']}"
        )
    for o in data["operations"][:5]:
        lines.append(
            f"  {o['at']:%Y-%m-%d %H:%M:%S}  {o['kind']} ({o['outcome']}) by {o['actor']}: {o['reason']}"
        )
    _emit(as_json, data, "\n".join(lines))


@region_app.command("history")
def region_history(
    region: Annotated[str | None, typer.Argument(help="One region (default: all).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Status changes, newest first, and the audit trail of failovers, fail-backs and database promotions."""

    async def history(pool: asyncpg.Pool) -> dict[str, Any]:
        async with UnitOfWork(pool) as uow:
            changes = await uow.regions.history(region, limit=limit)
            operations = await uow.regions.operations(region, limit=limit)
        return {"changes": [asdict(h) for h in changes], "operations": [asdict(o) for o in operations]}

    data = _run(as_json, _with_pool(state_dir, history))
    lines = [
        f"{h['at']:%Y-%m-%d %H:%M:%S}  {h['region']:<12} {h['from_status'] or '-':>8} -> {h['to_status']:<8} "
        f"by {h['actor']}: {h['reason']}"
        for h in data["changes"]
    ]
    lines += [""] + [
        f"{o['at']:%Y-%m-%d %H:%M:%S}  {o['region']:<12} {o['kind']} ({o['outcome']}) by {o['actor']}: {o['reason']}"
        for o in data["operations"]
    ] if data["operations"] else []  # fmt: skip
    _emit(as_json, data, "\n".join(lines) if data["changes"] or data["operations"] else "no changes recorded")


@region_app.command("failover")
def region_failover(
    region: str,
    reason: ReasonOpt,
    actor: ActorOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Force a region down: its queued work goes elsewhere, its running work moves after
    STAMEN_REGION_LOST_AFTER_SECONDS, and a database primary there is switched over."""
    who = actor or f"operator:{getpass.getuser()}"

    async def run(pool: asyncpg.Pool) -> dict[str, Any]:
        return asdict(await force_failover(pool, region, actor=who, reason=reason))

    data = _run(as_json, _with_pool(state_dir, run))
    _emit(
        as_json,
        data,
        f"region {region}: {data['previous']} -> down (forced by {who}); audit #{data['operation_id']}",
    )


@region_app.command("failback")
def region_failback(
    region: str,
    reason: ReasonOpt,
    database: Annotated[
        bool, typer.Option("--database", help="Also move the database primary back here.")
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for the region to be healthy (0: don't).")
    ] = 0.0,
    actor: ActorOpt = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift a forced failover: the region comes back once the probes agree (hysteresis)."""
    who = actor or f"operator:{getpass.getuser()}"

    async def run(pool: asyncpg.Pool) -> dict[str, Any]:
        result = asdict(await fail_back(pool, region, actor=who, reason=reason, database=database))
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline:
            async with UnitOfWork(pool) as uow:
                status = next(
                    (o.status.value for o in await uow.regions.overview() if o.region == region), None
                )
            if not as_json:
                typer.echo(f"-> {region}: {status}", err=True)
            if status == "healthy":
                break
            await asyncio.sleep(1.0)
        async with UnitOfWork(pool) as uow:
            result["status"] = next(
                o.status.value for o in await uow.regions.overview() if o.region == region
            )
        return result

    data = _run(as_json, _with_pool(state_dir, run))
    extra = "; database switchover requested" if data["switchover_requested"] else ""
    _emit(
        as_json,
        data,
        f"region {region}: override lifted, now {data['status']}{extra}; audit #{data['operation_id']}",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(region_app, name="region")
