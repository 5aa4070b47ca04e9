"""Scheduler-side commands: clusters, tenant limits, cancel, the dead-letter queue."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError

from stamen.cli import CliError, JsonOpt, StateDirOpt, _database_url, _emit, _run, _settings
from stamen.domain.clusters import ClusterSpec, ClusterStatus
from stamen.retry import CHANGEABLE_FIELDS
from stamen.store.clusters import ClusterRecord
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork

T = TypeVar("T")
cluster_app = typer.Typer(help="The cluster registry.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="The dead-letter queue: dead letters, the worksets stamen will not run again (retries used up, not "
    "retryable, retries off; `stamen dlq ls|show|requeue|purge`). Parked messages, bus messages no consumer "
    "could handle (the STAMEN_DLQ stream), are `stamen dlq messages`.",
    no_args_is_help=True,
)
tenant_app = typer.Typer(help="Tenant limits.", no_args_is_help=True)


def _with_pool(state_dir: Path | None, fn: Callable[[asyncpg.Pool], Awaitable[T]]) -> Callable[[], Any]:
    async def run() -> T:
        pool = await create_pool(_database_url(_settings(state_dir)), max_size=2)
        try:
            return await fn(pool)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if isinstance(code, str):
                raise CliError(code, str(exc)) from None
            raise
        finally:
            await pool.close()

    return run


@cluster_app.command("add")
def cluster_add(
    name: str,
    region: Annotated[str, typer.Option(help="AWS region the cluster is in.")],
    executor: Annotated[str, typer.Option(help="local | slurm")] = "local",
    max_concurrent: Annotated[int, typer.Option(help="Worksets it may run at once.")] = 2,
    price_factor: Annotated[float, typer.Option(help="Relative cost; 1.0 = list price.")] = 1.0,
    data_location: Annotated[
        list[str] | None, typer.Option(help="Bucket or region it is close to (repeat).")
    ] = None,
    config: Annotated[
        str, typer.Option(help='Executor settings as JSON, e.g. \'{"partition": "main"}\'.')
    ] = "{}",
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add or update a cluster."""
    try:
        cfg = json.loads(config)
    except json.JSONDecodeError as exc:
        raise CliError("CLUSTER_CONFIG_INVALID", f"--config is not JSON: {exc}") from None
    spec = _cluster_spec(name=name, region=region, executor=executor, max_concurrent=max_concurrent,
                         price_factor=price_factor, data_locations=data_location or [], config=cfg)  # fmt: skip
    record = ClusterRecord(spec.name, spec.region, spec.executor, spec.max_concurrent, spec.price_factor,
                           tuple(spec.data_locations), "active", spec.config)  # fmt: skip

    async def add(pool: asyncpg.Pool) -> None:
        async with UnitOfWork(pool) as uow:
            await uow.clusters.upsert_cluster(record)
            await uow.commit()

    _run(as_json, _with_pool(state_dir, add))
    _emit(as_json, {"cluster": name, "status": "active"}, f"cluster {name} saved")


def _cluster_spec(**fields: Any) -> ClusterSpec:
    """The one cluster model (stamen.domain.clusters), its refusals as CLI errors naming the option."""
    try:
        return ClusterSpec.model_validate(fields)
    except ValidationError as exc:
        problems = [(str(e["loc"][0]) if e["loc"] else "", e["msg"]) for e in exc.errors()]
    if any(field == "executor" for field, _ in problems):
        code, given = "CLUSTER_EXECUTOR_INVALID", f" (given {fields['executor']!r})"
    else:
        code, given = "CLUSTER_INVALID", ""
    raise CliError(code, "; ".join(f"{_option(field)}: {msg}" for field, msg in problems) + given)


def _option(field: str) -> str:
    if field == "name":
        return "NAME"
    return "--data-location" if field == "data_locations" else "--" + field.replace("_", "-")


@cluster_app.command("ls")
def cluster_ls(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """List clusters with their load."""

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with UnitOfWork(pool) as uow:
            views = {v.name: v for v in await uow.slots.cluster_views()}
            return [
                {**c.__dict__, "data_locations": list(c.data_locations), "running": views[c.name].running}
                for c in await uow.clusters.clusters()
            ]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['name']:<16} {r['executor']:<6} {r['region']:<12} {r['status']:<9} {r['running']}/{r['max_concurrent']}"
        for r in rows
    )
    _emit(as_json, rows, text or "no clusters")


def _set_status(name: str, status: ClusterStatus, state_dir: Path | None, as_json: bool) -> None:
    from stamen.commands import set_cluster_status

    async def change(pool: asyncpg.Pool) -> None:
        await set_cluster_status(pool, name, status, actor="cli")

    _run(as_json, _with_pool(state_dir, change))
    _emit(as_json, {"cluster": name, "status": status}, f"cluster {name} is {status}")


@cluster_app.command("drain")
def cluster_drain(name: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Take no new worksets on this cluster; running ones finish."""
    _set_status(name, "draining", state_dir, as_json)


@cluster_app.command("activate")
def cluster_activate(name: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Take new worksets again."""
    _set_status(name, "active", state_dir, as_json)


@cluster_app.command("rm")
def cluster_rm(name: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Remove a cluster that runs nothing."""

    async def rm(pool: asyncpg.Pool) -> None:
        async with UnitOfWork(pool) as uow:
            await uow.clusters.remove_cluster(name)
            await uow.commit()

    _run(as_json, _with_pool(state_dir, rm))
    _emit(as_json, {"cluster": name, "removed": True}, f"cluster {name} removed")


@tenant_app.command("limit")
def tenant_limit(
    tenant: str, max_concurrent: int, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Set how many worksets a tenant may run at once (a customer's quota is updated with it)."""
    from stamen.customers.limits import InvalidTenantLimit, check_tenant_limit, set_tenant_limit

    try:  # refused before connecting: nothing to write
        check_tenant_limit(tenant, max_concurrent)
    except InvalidTenantLimit as exc:
        raise CliError(exc.code, str(exc)) from None

    async def set_limit(pool: asyncpg.Pool) -> bool:
        return await set_tenant_limit(pool, tenant, max_concurrent)

    customer_updated = _run(as_json, _with_pool(state_dir, set_limit))
    _emit(
        as_json,
        {"tenant": tenant, "max_concurrent": max_concurrent, "customer_updated": customer_updated},
        f"{tenant}: at most {max_concurrent} at once"
        + (" (customer quota updated too)" if customer_updated else ""),
    )


def worksets_cancel(
    workset_id: str,
    by: Annotated[str, typer.Option(help="Who is cancelling (recorded in the history).")] = "cli",
    reason: str = "",
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a workset; a running one is stopped (scancel / process group) and its slot freed."""
    from stamen.commands import CancelResult, request_cancel

    async def cancel(pool: asyncpg.Pool) -> CancelResult:
        return await request_cancel(pool, workset_id, actor=by, reason=reason)

    result = _run(as_json, _with_pool(state_dir, cancel))
    text = f"{workset_id}: " + ("stopping the running job" if result.pending else result.state)
    _emit(as_json, result.__dict__, text)


@dlq_app.command("ls")
def dlq_ls(tenant: str | None = None, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Dead-lettered worksets."""

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with UnitOfWork(pool) as uow:
            return await uow.dead_letters.list(tenant)

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['workset_id']}  {r['tenant_id']:<12} {r['reason']:<17} {r['attempts']} attempts  "
        f"{r['last_code']}  {r['detail']}"
        for r in rows
    )
    _emit(as_json, rows, text or "the dead-letter queue is empty")


@dlq_app.command("show")
def dlq_show(workset_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Every attempt and every diagnosis of one workset."""

    async def show(pool: asyncpg.Pool) -> dict[str, Any]:
        async with UnitOfWork(pool) as uow:
            ws = await uow.worksets.get(workset_id)
            diagnoses = await uow.diagnoses.for_workset(workset_id)
            runs = await uow.slots.runs(workset_id)
            parked = await uow.dead_letters.get(workset_id)
        return {
            "id": ws.id,
            "state": ws.state.value,
            "dead_letter": parked,
            "attempts": runs,
            "diagnoses": [
                {"attempt": d.attempt, "code": d.code, "retry_class": d.retry_class, "report": d.report}
                for d in diagnoses
            ],
        }

    data = _run(as_json, _with_pool(state_dir, show))
    lines = [f"{data['id']}  {data['state']}"]
    if data["dead_letter"]:
        parked = data["dead_letter"]
        lines.append(
            f"dead-lettered ({parked['reason']}) after {parked['attempts']} attempts: {parked['detail']}"
        )
    for d in data["diagnoses"]:
        lines += [f"--- attempt {d['attempt']}: {d['code']} ({d['retry_class']})", d["report"]]
    _emit(as_json, data, "\n".join(lines))


@dlq_app.command("requeue")
def dlq_requeue(
    workset_id: str,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change a field: key=JSON value (repeat). Keys: " + ", ".join(CHANGEABLE_FIELDS) + ".",
        ),
    ] = None,
    by: str = "cli",
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a dead-lettered workset back to the queue with a fresh retry budget."""
    from stamen.commands import requeue

    changes: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CliError(
                "REQUEUE_CHANGE_INVALID", f"--set {item!r}: write key=value, e.g. --set max_retries=5"
            )
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw

    async def run(pool: asyncpg.Pool) -> str:
        return await requeue(pool, workset_id, actor=by, changes=changes or None)

    state = _run(as_json, _with_pool(state_dir, run))
    _emit(as_json, {"workset_id": workset_id, "state": state}, f"{workset_id}: {state}")


@dlq_app.command("purge")
def dlq_purge(
    workset_id: str, by: str = "cli", state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Archive a dead-lettered workset and drop it from the queue."""
    from stamen.commands import purge_dead_letter

    async def run(pool: asyncpg.Pool) -> None:
        await purge_dead_letter(pool, workset_id, actor=by)

    _run(as_json, _with_pool(state_dir, run))
    _emit(as_json, {"workset_id": workset_id, "state": "archived"}, f"{workset_id}: archived")


def worksets_retrying(
    tenant: str | None = None,
    due: Annotated[bool, typer.Option(help="Only those whose retry is due now.")] = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Worksets waiting for their next attempt, and when it is due."""
    from datetime import UTC, datetime

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with UnitOfWork(pool) as uow:
            rows = await uow.timers.get_retryable_worksets(
                tenant_id=tenant, due_by=datetime.now(UTC) if due else None
            )
        return [r.__dict__ for r in rows]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['workset_id']}  {r['tenant_id']:<12} retry {r['retry_count']}/{r['max_retries']} "
        f"due {r['due_at']:%Y-%m-%d %H:%M:%S%z}"
        for r in rows
    )
    _emit(as_json, rows, text or "no workset is waiting to retry")


def register(app: typer.Typer, worksets_app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    from stamen import cli_dlq_messages

    cli_dlq_messages.register(dlq_app)
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(tenant_app, name="tenant")
    worksets_app.command("cancel")(worksets_cancel)
    worksets_app.command("retrying")(worksets_retrying)
