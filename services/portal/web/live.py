"""Live updates: GET /live streams workset events to the browser as Server-Sent Events (aiohttp-sse).

Fed by the bus, not by polling: each connection reads STAMEN_EVENTS with an ordered JetStream consumer
filtered to the subjects its caller may see (`stamen.evt.<tenant>.>`; operators `stamen.evt.>`), and the
tenant of every event is checked again before it is sent. The SSE id of an event is its stream sequence,
so a browser that reconnects (EventSource sends Last-Event-ID; live.js passes ?last_event_id= when it has
to open a new EventSource) continues exactly after the last event it saw. The first message (`hello`)
carries the stream's current sequence, so even a page that has seen no event yet resumes without a gap.
Events carry ids and small facts only; pages re-read what they show from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp_sse import sse_response
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.portal.api.access import principal_of
from stamen.bus.connections import BusUnavailable
from stamen.bus.subjects import EVENTS_PREFIX, EVENTS_STREAM
from stamen.events.envelope import UndecodableMessage, decode_envelope
from stamen.service.keys import BUS

log = structlog.get_logger(__name__)

# A browser that comes back further behind than this reloads its page instead of replaying the gap.
MAX_REPLAY = 2000
QUEUE_SIZE = 1000
PING_SECONDS = 15.0
RETRY_MS = 2000


LIVE_FROM = web.RequestKey("live_from", int)


def setup_live(app: web.Application) -> None:
    """Nothing to open: each connection makes its own ordered consumer, which dies with it."""


async def remember_position(request: web.Request) -> None:
    """Note the stream's position before a page reads what it shows: the page's live stream starts there,
    so an event that happens while the page is being made or loaded is replayed, never missed. Without
    NATS the page is made all the same (its live stream starts when NATS is back)."""
    try:
        request[LIVE_FROM] = (await request.app[BUS].js.stream_info(EVENTS_STREAM)).state.last_seq
    except (BusUnavailable, NatsError, TimeoutError):
        pass


def last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or not raw.isdigit() or len(raw) > 19:
        return None
    return int(raw)


async def events(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    tenant = principal.visible_tenant()
    subject = f"{EVENTS_PREFIX}.{tenant}.>" if tenant is not None else f"{EVENTS_PREFIX}.>"
    try:
        js = request.app[BUS].js
        head = (await js.stream_info(EVENTS_STREAM)).state.last_seq
    except (BusUnavailable, NatsError, TimeoutError):  # the browser retries (live.js backs off)
        return web.Response(status=503, text="live updates are not available right now")
    resume = last_event_id(request)
    queue: asyncio.Queue[Msg | None] = asyncio.Queue(maxsize=QUEUE_SIZE)

    async def deliver(msg: Msg) -> None:
        try:
            queue.put_nowait(msg)
        except asyncio.QueueFull:  # a browser this far behind reconnects and resumes from its last id
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    start = head + 1 if resume is None or resume > head else resume + 1
    async with sse_response(request, ping_interval=PING_SECONDS) as resp:
        if resume is not None and head - resume > MAX_REPLAY:
            await resp.send(
                json.dumps({"missed": head - resume}), event="reload", id=str(head), retry=RETRY_MS
            )
            return resp
        await resp.send(json.dumps({"seq": head}), event="hello", id=str(max(start - 1, 0)), retry=RETRY_MS)
        sub = await js.subscribe(
            subject,
            cb=deliver,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
        )
        closed = asyncio.ensure_future(resp.wait())  # ends when the browser goes (its pings fail)
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                msg = getter.result()
                if msg is None:
                    break
                fact = _fact(msg)
                if fact is not None and principal.can_access(fact["tenant"]):
                    await resp.send(json.dumps(fact), event="workset", id=str(msg.metadata.sequence.stream))
        except ConnectionResetError:
            pass  # the browser went away; it resumes from its last id when it comes back
        finally:
            closed.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    return resp


def _fact(msg: Msg) -> dict[str, Any] | None:
    try:
        envelope = decode_envelope(msg.data)
    except UndecodableMessage:
        return None
    if envelope.workset_id is None:
        return None
    return {
        "type": envelope.type,
        "workset_id": envelope.workset_id,
        "tenant": envelope.tenant_id,
        "at": envelope.occurred_at.isoformat(),
    }
