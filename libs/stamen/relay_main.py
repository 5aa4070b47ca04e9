"""A stand-alone outbox relay process (`stamen relay`), stopped by SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.publisher import JetStreamPublisher
from stamen.relay import OutboxRelay
from stamen.settings import Settings
from stamen.store.db import create_pool


async def run_relay(settings: Settings) -> None:
    pool = await create_pool(settings.require_database_url(), max_size=3)
    nc = await connect_nats(settings.require_nats_url(), name="stamen-relay")
    js = nc.jetstream()
    await ensure_streams(
        js,
        dedup_window_seconds=settings.dedup_window_seconds,
        replicas=settings.stream_replicas,
        placement_tags=settings.stream_placement_tags,
    )
    relay = OutboxRelay.from_settings(pool, JetStreamPublisher(js), settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await relay.start()
    await stop.wait()
    await relay.stop()
    await nc.drain()
    await pool.close()
