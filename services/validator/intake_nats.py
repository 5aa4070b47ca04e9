"""Lab systems' intake: NATS request/reply on stamen.intake.<tenant>.

Several validators share the subject through a queue group, so each request is answered once, and only
on a reply subject under the sender's own inbox prefix (`_INBOX.<tenant>.`): any other request is dropped
unanswered and counted (stamen_nats_intake_replies_refused_total). The request body is the workset
document (JSON or YAML; header Content-Type optional), with an optional Idempotency-Key header; the reply is JSON: {"ok": true, "workset_id", ...} or
{"ok": false, "code", "message", "details"}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from stamen.bus.announce import Announce, announcer
from stamen.bus.metrics import INTAKE_REPLIES_REFUSED
from stamen.bus.subjects import INTAKE_PREFIX
from stamen.domain.workset import TENANT_ID_PATTERN
from stamen.inputs.contexts import INTAKE_SETTINGS
from stamen.inputs.settings import IntakeSettings
from stamen.inputs.submission import media_of, submit_document
from stamen.intake import IntakeRefused
from stamen.natsauth import inbox_prefix, reply_subject_allowed
from stamen.service.contexts import cancel_start, start_with_bus
from stamen.service.keys import BUS, POOL, SETTINGS
from stamen.worksets.limits import MAX_DOCUMENT_BYTES, NATS_MAX_PAYLOAD

log = structlog.get_logger(__name__)
ACTOR = "nats-intake"


def _header(msg: Msg, name: str) -> str | None:
    for key, value in (msg.headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


class IntakeResponder:
    def __init__(
        self,
        nc: NATS,
        pool: asyncpg.Pool,
        *,
        region: str,
        intake: IntakeSettings,
        announce: Announce | None = None,
    ) -> None:
        """`announce`: publishes a submission's workset.submitted once committed, as the HTTP API does
        (stamen.bus.announce), so the validator need not wait for the outbox relay."""
        self._nc = nc
        self._pool = pool
        self._region = region
        self._intake = intake
        self._announce = announce
        self._slots = asyncio.Semaphore(intake.intake_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            f"{INTAKE_PREFIX}.*", queue=self._intake.intake_queue_group, cb=self._on_message
        )

    async def _on_message(self, msg: Msg) -> None:
        tenant = msg.subject[len(INTAKE_PREFIX) + 1 :]
        if msg.reply and not reply_subject_allowed(tenant, msg.reply):
            # We answer with the services' unrestricted connection: a reply subject outside the sender's
            # own inbox could be another tenant's inbox or a stream's subject. Not handled, not answered.
            INTAKE_REPLIES_REFUSED.labels(
                tenant=tenant if TENANT_ID_PATTERN.fullmatch(tenant) else "(invalid)"
            ).inc()
            log.warning(
                "nats_intake.reply_subject_refused",
                subject=msg.subject[:200],
                reply=msg.reply[:200],
                expected=f"{inbox_prefix(tenant)}.>"[:200],
            )
            return
        # nats-py runs callbacks one at a time; hand each request to a task so a slow one (a database
        # round trip) does not hold up the rest, with at most intake_concurrency in flight.
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _answer(self, msg: Msg) -> None:
        reply = await self.reply_for(
            msg.subject,
            msg.data,
            content_type=_header(msg, "Content-Type"),
            idempotency_key=_header(msg, "Idempotency-Key"),
        )
        if msg.reply:
            try:
                await msg.respond(json.dumps(reply, default=str).encode())
            except Exception:
                log.exception("nats_intake.reply_failed", subject=msg.subject)

    async def reply_for(
        self, subject: str, data: bytes, *, content_type: str | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        tenant = subject[len(INTAKE_PREFIX) + 1 :]
        try:
            outcome = await submit_document(
                self._pool,
                data,
                media=media_of(content_type) or "yaml",
                tenant=tenant,
                idempotency_key=idempotency_key,
                region=self._region,
                source="nats",
                actor=ACTOR,
                announce=self._announce,
            )
        except IntakeRefused as exc:
            return {"ok": False, "code": exc.code, "message": str(exc), "details": exc.details}
        except Exception:
            # The requester gets an answer even for a bug or an outage; the log has the traceback.
            log.exception("nats_intake.failed", subject=subject)
            return {
                "ok": False,
                "code": "INTERNAL_ERROR",
                "message": "the request could not be handled; retry with the same Idempotency-Key",
                "details": {},
            }
        log.info(
            "nats_intake.answered", tenant=tenant, accepted=outcome.accepted, workset_id=outcome.workset_id
        )
        return outcome.as_reply()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)


async def nats_intake_ctx(app: web.Application) -> AsyncIterator[None]:
    responders: list[IntakeResponder] = []

    async def listen() -> None:  # the validator starts without NATS; intake then waits for it
        limit = app[BUS].nc.max_payload
        if limit < MAX_DOCUMENT_BYTES + 64 * 1024:
            # The largest workset document cannot reach us over NATS: the lab's client refuses to send it.
            log.warning(
                "nats_intake.max_payload_below_document_limit",
                max_payload=limit,
                document_limit=MAX_DOCUMENT_BYTES,
                fix=f"set max_payload: {NATS_MAX_PAYLOAD} in nats-server's configuration (deploy/nats.conf)",
            )
        responder = IntakeResponder(
            app[BUS].nc,
            app[POOL],
            region=app[SETTINGS].region,
            intake=app[INTAKE_SETTINGS],
            announce=announcer(app[BUS]),
        )
        await responder.start()
        responders.append(responder)
        log.info(
            "nats_intake.listening",
            subject=f"{INTAKE_PREFIX}.*",
            queue=app[INTAKE_SETTINGS].intake_queue_group,
        )

    starting = await start_with_bus(app, listen, "nats-intake")
    yield
    await cancel_start(starting)
    for responder in responders:
        await responder.stop()
