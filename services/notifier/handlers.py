"""Events -> planned deliveries. Runs inside the inbox claim's transaction (stamen.service.idempotent),
so an event is planned exactly once: one row per (event, channel, recipient), with its message
rendered from PostgreSQL. Nothing is sent here: a channel that is down never holds up a consumer. Each
handler is a function of (unit of work, event) and keyword-only dependencies the wiring binds."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import structlog

from services.notifier import facts
from stamen.bus.consumer import EventHandler
from stamen.events.envelope import Envelope
from stamen.notifications.kinds import EVENT_KINDS, OPERATORS
from stamen.notifications.messages import Facts, render
from stamen.notifications.planning import Targets, listening, plan
from stamen.notifications.preferences import Channel, NotificationPreferences
from stamen.notifications.repository import FactsRepository, NewDelivery, NotificationRepository
from stamen.notifications.settings import NotifySettings
from stamen.service.idempotent import GroupCommit, idempotent
from stamen.store.db import Connection
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
OPERATIONS = "notifier-operations"  # the durable consumer of what the operators hear


def delivery_key(event_id: str, channel: Channel, recipient: str) -> str:
    """The idempotency key receivers see: stable for the triple, on every try and every resend."""
    digest = hashlib.sha256(recipient.encode()).hexdigest()[:12]
    return f"{event_id}:{channel.value}:{digest}"


def channel_options(prefs: NotificationPreferences, channel: Channel) -> dict[str, object]:
    if channel is Channel.LINEAR:
        return {"labels": list(prefs.linear.labels)}
    if channel is Channel.WEBHOOK:
        return {"format": prefs.webhook.format}
    return {}


def _announced(event: Envelope, settings: NotifySettings, enabled: bool) -> bool:
    if not enabled:
        log.info("notifier.disabled", reason="STAMEN_ENABLE_NOTIFICATIONS=false")
        return False
    age = datetime.now(UTC) - event.occurred_at
    if age > timedelta(hours=settings.max_event_age_hours):
        log.info("notifier.event_too_old", age_hours=round(age.total_seconds() / 3600, 1))
        return False
    return True


async def listened_to(
    conn: Connection, events: Sequence[Envelope], *, settings: NotifySettings, enabled: bool
) -> list[bool]:
    """For each workset event, whether planning it could add a delivery: some channel of its tenant
    hears of its kind. The group commit's screen (stamen.service.idempotent.Screen): one read for a
    whole group's events, so an event nobody listens to is acked with no claim, no facts read, no
    message rendered, nothing written. Who hears depends on the tenant's preferences and topic alone
    (planning.listening), never on the facts."""
    announced = [_announced(e, settings, enabled) for e in events]
    owners = {e.tenant_id for e, told in zip(events, announced, strict=True) if told}
    audiences = await NotificationRepository(conn).audiences(owners) if owners else {}
    verdicts = []
    for event, told in zip(events, announced, strict=True):
        if not told:
            verdicts.append(False)
            continue
        prefs, topic = audiences[event.tenant_id]
        kind = EVENT_KINDS[event.type]
        verdicts.append(bool(listening(prefs, owner=event.tenant_id, kind=kind, targets=Targets(topic))))
    return verdicts


async def plan_workset_event(
    uow: UnitOfWork, event: Envelope, *, settings: NotifySettings, enabled: bool
) -> None:
    """A workset's own news (submitted, validated, started, completed, failed for good, ...) for its tenant."""
    if not _announced(event, settings, enabled):
        return
    found = await facts.workset_facts(FactsRepository(uow.connection), event)
    if found is not None:
        await record(uow.connection, found, settings=settings)


async def plan_operations_event(
    uow: UnitOfWork, event: Envelope, *, settings: NotifySettings, enabled: bool
) -> None:
    """What the operators hear: region health, a drained cluster, dead letters piling up."""
    if not _announced(event, settings, enabled):
        return
    repo = FactsRepository(uow.connection)
    found: Facts | None
    if event.type == "region.health_changed":
        found = facts.region_facts(event)
    elif event.type == "cluster.drained":
        found = await facts.drained_facts(repo, event)
    else:  # workset.dead_lettered: are they piling up?
        found = await facts.pile_up_facts(
            repo,
            event,
            threshold=settings.dlq_alert_threshold,
            window_minutes=settings.dlq_alert_window_minutes,
            now=datetime.now(UTC),
        )
    if found is not None:
        await record(uow.connection, found, settings=settings)


async def record(conn: Connection, found: Facts, *, settings: NotifySettings) -> int:
    """The deliveries `found` calls for under its owner's preferences; how many were added."""
    repo = NotificationRepository(conn)
    owner = found.owner
    prefs, customer_topic = await repo.audience(owner)
    topic = settings.operator_topic_arn if owner == OPERATORS else customer_topic
    planned = plan(
        prefs,
        owner=owner,
        kind=found.kind,
        severity=found.severity,
        targets=Targets(topic),
        now=datetime.now(UTC),
    )
    if not planned:
        return 0
    message = render(found, settings.portal_url).model_dump(mode="json")
    added = await repo.add(
        [
            NewDelivery(
                event_id=uuid.UUID(found.event_id),
                event_type=found.event_type,
                kind=found.kind.value,
                owner=owner,
                workset_id=found.workset.id if found.workset else None,
                occurred_at=found.occurred_at,
                thread=found.thread,
                channel=p.channel.value,
                recipient=p.recipient,
                idempotency_key=delivery_key(found.event_id, p.channel, p.recipient),
                severity=found.severity.value,
                message={"message": message, "options": channel_options(prefs, p.channel)},
                next_attempt_at=p.not_before,
                digest=p.digest,
            )
            for p in planned
        ]
    )
    log.info(
        "notifier.planned",
        kind=found.kind.value,
        owner=owner,
        channels=[p.channel.value for p in planned],
        added=added,
    )
    return added


def consumer_handlers(
    pool: Callable[[], asyncpg.Pool],
    notify: NotifySettings,
    durables: Iterable[str],
    *,
    enabled: bool,
    group: GroupCommit | None = None,
) -> dict[str, EventHandler]:
    """The handlers of the notifier's durable consumers (services.notifier.app.FAMILIES): planning under
    the inbox claim. The workset consumers share one screen (`listened_to`), so a group's events are
    screened in one read, whichever consumer brought them."""
    screen = partial(listened_to, settings=notify, enabled=enabled)
    plan_operations = partial(plan_operations_event, settings=notify, enabled=enabled)
    plan_worksets = partial(plan_workset_event, settings=notify, enabled=enabled)
    return {
        durable: idempotent(durable, pool, plan_operations, group=group)
        if durable == OPERATIONS
        else idempotent(durable, pool, plan_worksets, group=group, screen=screen)
        for durable in durables
    }
