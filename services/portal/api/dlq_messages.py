"""Parked messages (operators): the STAMEN_DLQ stream listed, one message shown, a message replayed.
Dead letters (dead-lettered worksets, the dead_letters table) are /dlq; these are bus messages no consumer could handle."""

from __future__ import annotations

from aiohttp import web
from nats.js import JetStreamContext

from services.portal.api import models as m
from services.portal.api.access import actor_of, query, reply, require_operator
from services.portal.api.errors import ApiError
from stamen import dlq_messages
from stamen.service.keys import BUS, POOL


def _js(request: web.Request) -> JetStreamContext:
    bus = request.app[BUS]
    if not bus.connected.is_set():
        raise ApiError(503, "BUS_UNAVAILABLE", "NATS is not connected yet; try again in a moment")
    return bus.js


def _seq(request: web.Request) -> int:
    raw = request.match_info["seq"]
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise ApiError(400, "DLQ_MESSAGE_SEQ_INVALID", f"seq must be a positive integer (a STAMEN_DLQ sequence), "
                       f"not {raw[:40]!r}", {"seq": raw[:40]})  # fmt: skip
    return int(raw)


async def list_messages(request: web.Request) -> web.Response:
    require_operator(request)
    wanted = query(request, m.DlqMessageQuery)
    rows = await dlq_messages.list_messages(_js(request), request.app[POOL], consumer=wanted.consumer,
                                            reason=wanted.reason, limit=wanted.limit, after_seq=wanted.after)  # fmt: skip
    items = [m.DlqMessageOut.model_validate(r) for r in rows]
    return reply(
        m.DlqMessageList(items=items, next_after=items[-1].seq if len(rows) >= wanted.limit else None)
    )


async def show_message(request: web.Request) -> web.Response:
    require_operator(request)
    seq = _seq(request)
    shown = await dlq_messages.show_message(_js(request), request.app[POOL], seq)
    return reply(m.DlqMessageDetail.model_validate(shown))


async def replay_message(request: web.Request) -> web.Response:
    require_operator(request)
    seq = _seq(request)
    result = await dlq_messages.replay_message(_js(request), request.app[POOL], seq, actor=actor_of(request))
    return reply(m.DlqMessageReplayed.model_validate(result.__dict__))
