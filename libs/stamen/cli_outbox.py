"""Outbox commands: the events the relay parked (the broker kept refusing them), and sending them again."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import typer

from stamen.cli import CliError, JsonOpt, StateDirOpt, _emit, _run
from stamen.cli_scheduler import _with_pool
from stamen.store.outbox import OutboxQueue

outbox_app = typer.Typer(
    help="The outbox: events the relay parked because the broker refused them.", no_args_is_help=True
)


@outbox_app.command("parked")
def outbox_parked(
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 100,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parked events: what they are, how large, and the broker's last answer."""

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with pool.acquire() as conn:
            return [row.as_dict() for row in await OutboxQueue(conn).parked(limit)]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['id']:>8}  {r['subject']}  {r['size_bytes']} bytes  {r['attempts']} attempts  "
        f"parked {r['parked_at']}\n          {r['last_error']}"
        for r in rows
    )
    _emit(as_json, rows, text or "no parked events: the relay publishes everything")


@outbox_app.command("retry")
def outbox_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Outbox row ids (from `stamen outbox parked`).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every parked event.")] = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand parked events back to the relay (e.g. after raising the broker's max_payload)."""
    if not ids and not all_:
        raise CliError("OUTBOX_RETRY_NOTHING", "name the parked rows to retry (their ids), or pass --all")

    async def retry(pool: asyncpg.Pool) -> list[int]:
        async with pool.acquire() as conn:
            return await OutboxQueue(conn).unpark(None if all_ else ids)

    retried = _run(as_json, _with_pool(state_dir, retry))
    missing = sorted(set(ids or []) - set(retried))
    _emit(
        as_json,
        {"retried": retried, "not_parked": missing},
        f"handed back to the relay: {', '.join(map(str, retried)) or 'none'}"
        + (f"; not parked: {', '.join(map(str, missing))}" if missing else ""),
    )


def register(app: typer.Typer) -> None:
    app.add_typer(outbox_app, name="outbox")
