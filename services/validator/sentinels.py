"""The validator-sentinels consumer's handler as the service wires it: Daylily sentinels of S3-dropped
worksets kept true as their state changes (stamen.inputs.sentinels, handlers.keep_sentinel)."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from services.validator import handlers
from stamen.bus.consumer import EventHandler
from stamen.inputs.contexts import OBJECT_STORE
from stamen.service.idempotent import GroupCommit
from stamen.service.keys import POOL
from stamen.settings import Settings

EVENTS = ("workset.rejected", "workset.completed", "workset.dead_lettered", "workset.cancelled")
# Every terminal workset's event comes here (one per workset, so they come slowly), and almost none was
# dropped via S3: their read (and the few sentinels' records) gather for up to 0.5 s, since nobody waits
# on them (a Daylily sentinel appears that much later); the validation's own read and decision gather
# for the service's 5 ms (app[INBOX_GROUP]).
GATHER_SECONDS = 0.5
MAX_GROUP = 64
CONCURRENCY_FACTOR = 8


def sentinel_handler(app: web.Application) -> EventHandler:
    group = GroupCommit(lambda: app[POOL], max_group=MAX_GROUP, gather_seconds=GATHER_SECONDS)
    return partial(
        handlers.keep_sentinel, pool=lambda: app[POOL], store=lambda: app[OBJECT_STORE], group=group
    )


def sentinel_concurrency(settings: Settings) -> int:
    return settings.consumer_concurrency * CONCURRENCY_FACTOR
