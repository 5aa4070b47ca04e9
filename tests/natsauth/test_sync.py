"""NatsAuthSync on real PostgreSQL: a change is rendered and the server reloaded; a failed reload is
tried again even though the file no longer changes (otherwise a revoked key would stay valid)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from stamen.natsauth import NatsCredentialService, ServiceUser
from stamen.natsauth.sync import NatsAuthSync
from tests.natsauth.test_tenant_credentials import add_customer


async def test_a_failed_reload_is_retried_until_it_succeeds(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await add_customer(pool, "lab-a")
    outcomes = [OSError("no such process"), OSError("no such process"), None]
    reloads: list[float] = []

    def reload() -> None:
        reloads.append(time.monotonic())
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome

    path = tmp_path / "auth.conf"
    sync = NatsAuthSync(
        database_url, ServiceUser("stamen", "$2b$11$x"), path, reload, resync_seconds=60, retry_seconds=0.2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sync.run(stop))
    try:
        deadline = time.monotonic() + 15
        while len(reloads) < 3:  # first render: reload fails twice, then succeeds; no file change between
            assert time.monotonic() < deadline, f"reload tried {len(reloads)} times"
            await asyncio.sleep(0.05)
        assert sync.renders == 1
        created = await NatsCredentialService(pool).create("lab-a", "lims")
        while len(reloads) < 4:  # a change is rendered and reloaded once (NOTIFY, not the 60 s resync)
            assert time.monotonic() < deadline, "the new credential was not rendered"
            await asyncio.sleep(0.05)
        assert created.record.public_key in path.read_text() and sync.renders == 2
        await asyncio.sleep(0.5)
        assert len(reloads) == 4  # nothing pending: no more reloads
    finally:
        stop.set()
        await task
