"""Operator commands on the STAMEN_DLQ stream's parked messages (`stamen dlq messages ls|show|replay`,
`/api/v1/dlq/messages`), and the reconciler pass that replays or resolves them by itself.

A replay sends the parked message back on its events subject for its consumer only, with the same
body (so the same event id, and the consumer's inbox claim still makes a second handling a no-op), is
recorded in `dlq_message_actions`, and removes the parked copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from nats.js import JetStreamContext

from stamen.bus.parked import ParkedMessage, ParkedMessages
from stamen.errors import CodedError
from stamen.events.envelope import UndecodableMessage, decode_envelope
from stamen.recovery.parked import MessageFacts, Verdict, decide, replay_refusal
from stamen.store.parked import DlqMessageLog

log = structlog.get_logger(__name__)


class DlqMessageNotFound(CodedError, LookupError):
    code = "DLQ_MESSAGE_NOT_FOUND"
    http_status = 404


class DlqMessageNotReplayable(CodedError, RuntimeError):
    code = "DLQ_MESSAGE_NOT_REPLAYABLE"
    http_status = 409


@dataclass(frozen=True)
class ReplayResult:
    seq: int
    consumer: str
    event_id: str | None
    subject: str
    replayed: bool  # False: it had been replayed or resolved already
    detail: str


async def facts_of(pool: asyncpg.Pool, message: ParkedMessage) -> MessageFacts:
    try:
        decode_envelope(message.body)
        decodes = True
    except UndecodableMessage:
        decodes = False
    async with pool.acquire() as conn:
        store = DlqMessageLog(conn)
        exists = bool(message.workset_id and await store.workset_state(message.workset_id))
        handled = bool(message.event_id and await store.handled_by(message.consumer, message.event_id))
        replays = await store.replays(message.event_id, message.consumer) if message.event_id else 0
    return MessageFacts(
        reason=message.reason,
        decodes=decodes,
        workset_id=message.workset_id,
        workset_exists=exists,
        handled=handled,
        replays=replays,
        age_seconds=message.age_seconds(),
    )


async def list_messages(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    *,
    consumer: str | None = None,
    reason: str | None = None,
    limit: int = 100,
    after_seq: int = 0,
) -> list[dict[str, Any]]:
    """Parked messages still to be dealt with, oldest first, each with whether it can be replayed."""
    found = await ParkedMessages(js).list(consumer=consumer, reason=reason, limit=limit, after_seq=after_seq)
    async with pool.acquire() as conn:
        done = await DlqMessageLog(conn).acted_on([m.msg_id for m in found])
    rows = []
    for message in found:
        if message.msg_id in done:
            continue  # replayed or resolved; its copy is about to go
        facts = await facts_of(pool, message)
        refusal = replay_refusal(facts)
        rows.append({**message.summary(), "replayable": refusal is None, "not_replayable_because": refusal,
                     "handled_since": facts.handled, "replays": facts.replays})  # fmt: skip
    return rows


async def show_message(js: JetStreamContext, pool: asyncpg.Pool, seq: int) -> dict[str, Any]:
    message = await _get(js, seq)
    facts = await facts_of(pool, message)
    async with pool.acquire() as conn:
        store = DlqMessageLog(conn)
        actions = await store.acted_on([message.msg_id])
        state = await store.workset_state(message.workset_id) if message.workset_id else None
    refusal = replay_refusal(facts)
    return {
        **message.summary(),
        "replayable": refusal is None,
        "not_replayable_because": refusal,
        "handled_since": facts.handled,
        "replays": facts.replays,
        "workset_state": state,
        "action": actions.get(message.msg_id),
        "headers": message.headers,
        "body": message.body_text(),
    }


async def _get(js: JetStreamContext, seq: int) -> ParkedMessage:
    message = await ParkedMessages(js).get(seq)
    if message is None:
        raise DlqMessageNotFound(
            f"no parked message {seq} in STAMEN_DLQ (replayed, resolved or never there); "
            "see `stamen dlq messages ls`",
            seq=seq,
        )
    return message


async def replay_message(js: JetStreamContext, pool: asyncpg.Pool, seq: int, *, actor: str) -> ReplayResult:
    """An operator's replay. Refused (DLQ_MESSAGE_NOT_REPLAYABLE) if the body is not an event this build
    reads or its workset is gone; a message replayed or resolved already is not sent twice."""
    message = await _get(js, seq)
    refusal = replay_refusal(await facts_of(pool, message))
    if refusal is not None:
        raise DlqMessageNotReplayable(f"parked message {seq} cannot be replayed: {refusal}", seq=seq)
    return await _replay(js, pool, message, actor=actor, detail=f"replayed by {actor}")


async def _replay(
    js: JetStreamContext, pool: asyncpg.Pool, message: ParkedMessage, *, actor: str, detail: str
) -> ReplayResult:
    parked = ParkedMessages(js)
    async with pool.acquire() as conn, conn.transaction():
        # The row first: if another replica or an operator got there, nothing is sent twice. If the
        # publish fails, the row rolls back and the message stays parked.
        claimed = await DlqMessageLog(conn).record(message, action="replayed", detail=detail, actor=actor)
        if claimed:
            await parked.republish(message)
    if claimed:
        await parked.delete(message.seq)
        log.warning("dlq.message_replayed", seq=message.seq, consumer=message.consumer,
                    event_id=message.event_id, workset_id=message.workset_id, actor=actor)  # fmt: skip
    return ReplayResult(
        seq=message.seq,
        consumer=message.consumer,
        event_id=message.event_id,
        subject=message.original_subject,
        replayed=claimed,
        detail=detail if claimed else "replayed or resolved already",
    )


async def _resolve(
    js: JetStreamContext, pool: asyncpg.Pool, message: ParkedMessage, *, actor: str, why: str
) -> bool:
    async with pool.acquire() as conn:
        claimed = await DlqMessageLog(conn).record(message, action="resolved", detail=why, actor=actor)
    if claimed:
        await ParkedMessages(js).delete(message.seq)
        log.info("dlq.message_resolved", seq=message.seq, consumer=message.consumer, event_id=message.event_id,
                 workset_id=message.workset_id, why=why)  # fmt: skip
    return claimed


async def reconcile_messages(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    consumers: list[str],
    *,
    actor: str,
    after_seconds: float,
    max_replays: int,
    limit: int = 100,
) -> dict[str, int]:
    """The reconciler's pass over the parked messages of `consumers`: replay what is safe to replay
    (parked after max_deliver, readable, workset there, not handled since, replayed fewer than
    `max_replays` times, parked longer than `after_seconds`), resolve what has nothing left to do,
    leave the rest for an operator."""
    counts = {v.value: 0 for v in Verdict}
    parked = ParkedMessages(js)
    for consumer in consumers:
        found = await parked.list(consumer=consumer, limit=limit)
        if not found:
            continue  # the usual case: no transaction to look up nothing
        async with pool.acquire() as conn:
            done_before = await DlqMessageLog(conn).acted_on([m.msg_id for m in found])
        for message in found:
            if message.msg_id in done_before:  # acted on, but its copy was not deleted (a crash between)
                await parked.delete(message.seq)
                continue
            decision = decide(
                await facts_of(pool, message), after_seconds=after_seconds, max_replays=max_replays
            )
            if decision.verdict is Verdict.REPLAY:
                done = (
                    await _replay(js, pool, message, actor=actor, detail=f"automatic: {decision.why}")
                ).replayed
            elif decision.verdict is Verdict.RESOLVE:
                done = await _resolve(js, pool, message, actor=actor, why=decision.why)
            else:
                done = True
            counts[decision.verdict.value] += int(done)
    return counts
