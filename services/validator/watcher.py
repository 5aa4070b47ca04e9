"""The S3 drop watcher as a background task of the validator service (only when buckets are set)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from stamen.bus.announce import announcer
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.drops import DropIntake, DropWatcher
from stamen.service.keys import BUS, POOL, SETTINGS

log = structlog.get_logger(__name__)


async def drop_watcher_ctx(app: web.Application) -> AsyncIterator[None]:
    intake_settings = app[INTAKE_SETTINGS]
    if not intake_settings.watched_buckets():
        log.info("drop_watcher.off", why="STAMEN_DROP_BUCKETS is empty")
        yield
        return
    intake = DropIntake(
        app[POOL],
        app[OBJECT_STORE],
        region=app[SETTINGS].region,
        intake=intake_settings,
        announce=announcer(bus) if (bus := app.get(BUS)) is not None else None,
    )
    watcher = DropWatcher(intake, app[OBJECT_STORE], app[POOL], intake_settings)
    task = asyncio.create_task(watcher.run(), name="drop-watcher")
    log.info(
        "drop_watcher.on",
        buckets=list(intake.buckets),
        prefix=intake.prefix,
        poll_seconds=intake_settings.drop_poll_seconds,
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
