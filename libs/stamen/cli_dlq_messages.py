"""`stamen dlq messages ls|show|replay`: parked messages, the STAMEN_DLQ stream (bus messages no consumer
could handle). Not to be confused with `stamen dlq ls`: dead letters, the dead-lettered worksets of the
`dead_letters` table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from nats.js import JetStreamContext

from stamen.cli import CliError, JsonOpt, StateDirOpt, _database_url, _emit, _nats_url, _run, _settings
from stamen.dlq_messages import (
    list_messages,
    replay_message,
    show_message,
)
from stamen.errors import CodedError
from stamen.store.db import create_pool

T = TypeVar("T")
messages_app = typer.Typer(
    help="Parked messages (the STAMEN_DLQ stream): bus messages a consumer could not handle. "
    "Dead letters (dead-lettered worksets) are `stamen dlq ls`.",
    no_args_is_help=True,
)


def _with_bus(
    state_dir: Path | None, fn: Callable[[JetStreamContext, asyncpg.Pool], Awaitable[T]]
) -> Callable[[], Coroutine[Any, Any, T]]:
    async def run() -> T:
        import nats

        settings = _settings(state_dir)
        database_url, nats_url = _database_url(settings), _nats_url(settings)
        try:
            nc = await nats.connect(nats_url, allow_reconnect=False, connect_timeout=5, name="stamen-cli")
        except Exception as exc:
            raise CliError(
                "NATS_UNREACHABLE", f"could not connect to NATS ({type(exc).__name__}: {exc})"
            ) from None
        pool = await create_pool(database_url, max_size=2)
        try:
            return await fn(nc.jetstream(), pool)
        except CodedError as exc:
            raise CliError(exc.code, str(exc)) from None
        finally:
            await pool.close()
            await nc.close()

    return run


@messages_app.command("ls")
def messages_ls(
    consumer: Annotated[
        str | None, typer.Option(help="Only this consumer's, e.g. validator-submitted.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option(help="max_deliver, malformed, unknown_type or undecodable.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    after: Annotated[
        int, typer.Option(help="Only messages after this sequence (paging).", min=0, max=2**63 - 2)
    ] = 0,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parked messages, oldest first: why each was parked, its event and workset, whether it can be replayed."""

    async def ls(js: JetStreamContext, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await list_messages(js, pool, consumer=consumer, reason=reason, limit=limit, after_seq=after)

    rows = _run(as_json, _with_bus(state_dir, ls))
    text = "\n".join(
        f"{r['seq']:>6}  {r['consumer']:<22} {r['reason']:<12} {r['event_type'] or '-':<22} "
        f"{r['workset_id'] or '-':<22} {r['parked_at']:%Y-%m-%d %H:%M:%S}  "
        + ("replayable" if r["replayable"] else f"not replayable: {r['not_replayable_because']}")
        for r in rows
    )
    _emit(as_json, rows, text or "no parked messages")


@messages_app.command("show")
def messages_show(seq: int, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """One parked message: its headers, body, the error that parked it and its workset's state now."""

    async def show(js: JetStreamContext, pool: asyncpg.Pool) -> dict[str, Any]:
        return await show_message(js, pool, seq)

    data = _run(as_json, _with_bus(state_dir, show))
    lines = [
        f"parked message {data['seq']}: {data['reason']} by {data['consumer']} at {data['parked_at']:%Y-%m-%d %H:%M:%S}",
        f"  event:    {data['event_type']} {data['event_id']} (from {data['original_subject'] or '?'})",
        f"  workset:  {data['workset_id'] or '-'} ({data['workset_state'] or 'not found'})",
        f"  error:    {data['error'] or '-'}",
        "  replay:   " + ("possible: stamen dlq messages replay " + str(seq) if data["replayable"]
                          else f"refused: {data['not_replayable_because']}"),
        "  body:     " + data["body"],
    ]  # fmt: skip
    _emit(as_json, data, "\n".join(lines))


@messages_app.command("replay")
def messages_replay(
    seq: int,
    by: Annotated[str, typer.Option(help="Who replays it (recorded).")] = "cli",
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a parked message back to its consumer (same event id: handled once); the parked copy is removed."""

    async def replay(js: JetStreamContext, pool: asyncpg.Pool) -> dict[str, Any]:
        return (await replay_message(js, pool, seq, actor=by)).__dict__

    data = _run(as_json, _with_bus(state_dir, replay))
    text = (f"parked message {seq} sent back to {data['consumer']} on {data['subject']}" if data["replayed"]
            else f"parked message {seq}: {data['detail']}")  # fmt: skip
    _emit(as_json, data, text)


def register(dlq_app: typer.Typer) -> None:
    dlq_app.add_typer(messages_app, name="messages")
