"""Every SQL statement of notifications: preferences, subscriptions, deliveries, rate buckets, and the
read-only facts a message needs from the tables other services own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, get_args

from stamen.notifications.kinds import DeliveryState
from stamen.notifications.preferences import NotificationPreferences
from stamen.notifications.ratelimits import RateLimit
from stamen.store.db import Connection

NOTIFY_CHANNEL = "stamen_notifications"
DEFAULT_PREFERENCES = NotificationPreferences()
DELIVERY_STATES: tuple[DeliveryState, ...] = get_args(DeliveryState)


@lru_cache(maxsize=256)
def _stored_preferences(text: str) -> NotificationPreferences:
    """Stored preferences, parsed once per distinct document (the model is frozen, so sharing it is
    safe): the notifier reads its owner's for every event it hears."""
    return NotificationPreferences.model_validate_json(text)


@dataclass(frozen=True)
class NewDelivery:
    event_id: uuid.UUID
    event_type: str
    kind: str
    owner: str
    workset_id: str | None
    occurred_at: datetime
    thread: str | None
    channel: str
    recipient: str
    idempotency_key: str
    severity: str
    message: dict[str, Any]
    next_attempt_at: datetime
    digest: bool


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    event_id: str
    event_type: str
    kind: str
    owner: str
    workset_id: str | None
    occurred_at: datetime
    thread: str | None
    channel: str
    recipient: str
    idempotency_key: str
    severity: str
    message: dict[str, Any]
    state: str
    digest: bool
    batch_key: str | None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    reference: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    resent_at: datetime | None
    resent_by: str | None


def _delivery(r: Any) -> DeliveryRow:
    return DeliveryRow(
        id=r["id"],
        event_id=str(r["event_id"]),
        event_type=r["event_type"],
        kind=r["kind"],
        owner=r["owner"],
        workset_id=r["workset_id"],
        occurred_at=r["occurred_at"],
        thread=r["thread"],
        channel=r["channel"],
        recipient=r["recipient"],
        idempotency_key=r["idempotency_key"],
        severity=r["severity"],
        message=json.loads(r["message"]),
        state=r["state"],
        digest=r["digest"],
        batch_key=r["batch_key"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
        reference=r["reference"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        delivered_at=r["delivered_at"],
        resent_at=r["resent_at"],
        resent_by=r["resent_by"],
    )


@dataclass(frozen=True)
class SubscriptionRow:
    owner: str
    protocol: str
    endpoint: str
    topic_arn: str
    subscription_arn: str
    status: str
    filter_policy: dict[str, Any]


class NotificationRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # --- owners and preferences ------------------------------------------------------------------
    async def customer_topic(self, customer_id: str) -> tuple[bool, str | None]:
        """(the customer exists, its SNS topic ARN)."""
        row = await self._conn.fetchrow(
            "SELECT sns_topic_arn FROM customers WHERE customer_id = $1", customer_id
        )
        return (row is not None, row["sns_topic_arn"] if row else None)

    async def preferences(self, owner: str) -> tuple[NotificationPreferences, datetime | None, str | None]:
        """The stored preferences, or the defaults (with no update time) when the owner set none."""
        row = await self._conn.fetchrow("SELECT * FROM notification_preferences WHERE owner = $1", owner)
        if row is None:
            return NotificationPreferences(), None, None
        prefs = NotificationPreferences.model_validate(json.loads(row["preferences"]))
        return prefs, row["updated_at"], row["updated_by"]

    async def audience(self, owner: str) -> tuple[NotificationPreferences, str | None]:
        """The owner's preferences (the defaults when it set none) and its customer's SNS topic ARN (None:
        not a customer, or no topic): what says who hears of its events."""
        return (await self.audiences([owner]))[owner]

    async def audiences(
        self, owners: Collection[str]
    ) -> dict[str, tuple[NotificationPreferences, str | None]]:
        """`audience` of each owner, in one statement."""
        rows = await self._conn.fetch(
            """SELECT o.owner, p.preferences, c.sns_topic_arn
               FROM unnest($1::text[]) AS o(owner)
               LEFT JOIN notification_preferences p ON p.owner = o.owner
               LEFT JOIN customers c ON c.customer_id = o.owner""",
            list(owners),
        )
        return {
            r["owner"]: (
                DEFAULT_PREFERENCES if r["preferences"] is None else _stored_preferences(r["preferences"]),
                r["sns_topic_arn"],
            )
            for r in rows
        }

    async def save_preferences(self, owner: str, prefs: NotificationPreferences, actor: str) -> None:
        await self._conn.execute(
            """INSERT INTO notification_preferences (owner, preferences, updated_by)
               VALUES ($1, $2::jsonb, $3)
               ON CONFLICT (owner) DO UPDATE SET preferences = $2::jsonb, updated_by = $3, updated_at = now()""",
            owner,
            prefs.model_dump_json(),
            actor,
        )

    # --- SNS subscriptions --------------------------------------------------------------------------
    async def subscriptions(self, owner: str) -> list[SubscriptionRow]:
        rows = await self._conn.fetch(
            "SELECT * FROM notification_subscriptions WHERE owner = $1 ORDER BY protocol, endpoint", owner
        )
        return [
            SubscriptionRow(
                owner=r["owner"],
                protocol=r["protocol"],
                endpoint=r["endpoint"],
                topic_arn=r["topic_arn"],
                subscription_arn=r["subscription_arn"],
                status=r["status"],
                filter_policy=json.loads(r["filter_policy"]),
            )
            for r in rows
        ]

    async def save_subscription(self, s: SubscriptionRow) -> None:
        await self._conn.execute(
            """INSERT INTO notification_subscriptions
                   (owner, protocol, endpoint, topic_arn, subscription_arn, status, filter_policy)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
               ON CONFLICT (owner, protocol, endpoint) DO UPDATE SET topic_arn = $4, subscription_arn = $5,
                   status = $6, filter_policy = $7::jsonb, updated_at = now()""",
            s.owner,
            s.protocol,
            s.endpoint,
            s.topic_arn,
            s.subscription_arn,
            s.status,
            json.dumps(s.filter_policy),
        )

    async def delete_subscription(self, owner: str, protocol: str, endpoint: str) -> None:
        await self._conn.execute(
            "DELETE FROM notification_subscriptions WHERE owner = $1 AND protocol = $2 AND endpoint = $3",
            owner,
            protocol,
            endpoint,
        )

    # --- deliveries: planning ------------------------------------------------------------------------
    async def add(self, deliveries: Sequence[NewDelivery]) -> int:
        """Insert what is new; a triple (event, channel, recipient) already planned is left alone."""
        added = 0
        for d in deliveries:
            status = await self._conn.execute(
                """INSERT INTO notification_deliveries (event_id, event_type, kind, owner, workset_id, occurred_at,
                       thread, channel, recipient, idempotency_key, severity, message, next_attempt_at, digest)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14)
                   ON CONFLICT DO NOTHING""",
                d.event_id,
                d.event_type,
                d.kind,
                d.owner,
                d.workset_id,
                d.occurred_at,
                d.thread,
                d.channel,
                d.recipient,
                d.idempotency_key,
                d.severity,
                json.dumps(d.message),
                d.next_attempt_at,
                d.digest,
            )
            added += status == "INSERT 0 1"
        return added

    # --- deliveries: the worker's side ---------------------------------------------------------------
    async def claim(self, channel: str, holder: str, lease_seconds: float, limit: int) -> list[DeliveryRow]:
        """Claim due deliveries of one channel: at most one in flight per recipient (a slow receiver
        holds one slot, never the channel), and, for Linear, a workset's deliveries in order (its
        issue is opened before it is commented on or closed). Claims of one channel are serialised
        across notifier replicas by a transaction-scoped advisory lock: call inside a transaction."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('stamen.notify.claim'), hashtext($1))", channel
        )
        rows = await self._conn.fetch(
            """WITH busy AS (
                   SELECT DISTINCT recipient FROM notification_deliveries
                   WHERE channel = $1 AND state = 'sending' AND lease_until >= clock_timestamp()
               ), candidates AS (
                   SELECT DISTINCT ON (d.recipient) d.id, d.next_attempt_at
                   FROM notification_deliveries d
                   WHERE d.channel = $1
                     AND ((d.state = 'pending' AND d.next_attempt_at <= clock_timestamp())
                          OR (d.state = 'sending' AND d.lease_until < clock_timestamp()))
                     AND d.recipient NOT IN (SELECT recipient FROM busy)
                     AND NOT (d.channel = 'linear' AND EXISTS (
                         SELECT 1 FROM notification_deliveries e
                         WHERE e.channel = 'linear' AND e.owner = d.owner AND e.recipient = d.recipient
                           AND e.thread = d.thread AND (e.occurred_at, e.id) < (d.occurred_at, d.id)
                           AND e.state IN ('pending', 'sending')))
                   ORDER BY d.recipient, d.next_attempt_at, d.id
               )
               UPDATE notification_deliveries u
               SET state = 'sending', attempts = u.attempts + 1, lease_holder = $2,
                   lease_until = clock_timestamp() + make_interval(secs => $3), updated_at = clock_timestamp()
               WHERE u.id IN (SELECT id FROM candidates ORDER BY next_attempt_at, id LIMIT $4)
               RETURNING u.*""",
            channel,
            holder,
            lease_seconds,
            limit,
        )
        return [_delivery(r) for r in rows]

    async def claim_batch(
        self, first: DeliveryRow, holder: str, lease_seconds: float, new_key: str
    ) -> list[DeliveryRow]:
        """The digest siblings of a claimed digest row: its batch if it has one (a retry sends the same
        batch under the same key), else the other due digest rows of its owner, channel and recipient."""
        rows = await self._conn.fetch(
            """UPDATE notification_deliveries
               SET state = 'sending', attempts = attempts + 1, lease_holder = $5, batch_key = $7,
                   lease_until = clock_timestamp() + make_interval(secs => $6), updated_at = clock_timestamp()
               WHERE id <> $1 AND channel = $2 AND owner = $3 AND recipient = $4 AND digest
                 AND ((state = 'pending' AND next_attempt_at <= clock_timestamp())
                      OR (state = 'sending' AND lease_until < clock_timestamp()))
                 AND (CASE WHEN $8::text IS NULL THEN batch_key IS NULL ELSE batch_key = $8 END)
               RETURNING *""",
            first.id,
            first.channel,
            first.owner,
            first.recipient,
            holder,
            lease_seconds,
            first.batch_key or new_key,
            first.batch_key,
        )
        await self._conn.execute(
            "UPDATE notification_deliveries SET batch_key = $2 WHERE id = $1",
            first.id,
            first.batch_key or new_key,
        )
        return [_delivery(r) for r in rows]

    async def finish(
        self,
        ids: Sequence[int],
        holder: str,
        *,
        state: str,
        reference: str | None = None,
        error: str | None = None,
        retry_in: float | None = None,
        uncount: bool = False,
    ) -> list[DeliveryRow]:
        """Record the outcome of a send for the rows this holder still has (a row whose lease was taken
        over is not touched). state 'pending' with `retry_in` schedules the next try; `uncount` gives
        back the attempt (the send never started, e.g. our own rate limit said wait)."""
        rows = await self._conn.fetch(
            """UPDATE notification_deliveries
               SET state = $3, reference = coalesce($4, reference), last_error = coalesce($5, last_error),
                   next_attempt_at = CASE WHEN $6::float8 IS NULL THEN next_attempt_at
                                          ELSE clock_timestamp() + make_interval(secs => $6) END,
                   attempts = attempts - CASE WHEN $7 THEN 1 ELSE 0 END,
                   delivered_at = CASE WHEN $3 = 'delivered' THEN clock_timestamp() ELSE delivered_at END,
                   lease_until = NULL, lease_holder = NULL, updated_at = clock_timestamp()
               WHERE id = ANY($1::bigint[]) AND lease_holder = $2 AND state = 'sending'
               RETURNING *""",
            list(ids),
            holder,
            state,
            reference,
            error[:2000] if error else None,
            retry_in,
            uncount,
        )
        return [_delivery(r) for r in rows]

    async def resolved_later(self, row: DeliveryRow) -> bool:
        """Whether a later notification already resolved this one's thread (a retry that completed
        before the failure's issue could be opened: the issue is then opened and closed at once)."""
        return bool(
            await self._conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM notification_deliveries
                   WHERE owner = $1 AND channel = $2 AND recipient = $3 AND thread = $4 AND occurred_at > $5
                     AND state IN ('delivered', 'skipped') AND (message->'message'->>'resolves_thread')::boolean)""",
                row.owner,
                row.channel,
                row.recipient,
                row.thread,
                row.occurred_at,
            )
        )

    async def next_due(self) -> datetime | None:
        return await self._conn.fetchval(  # type: ignore[no-any-return]
            """SELECT min(CASE WHEN state = 'pending' THEN next_attempt_at ELSE lease_until END)
               FROM notification_deliveries WHERE state IN ('pending', 'sending')"""
        )

    async def take_tokens(self, key: str, limit: RateLimit, cost: float = 1.0) -> float:
        """Take `cost` tokens from the shared bucket `key`: 0 when taken, else the seconds to wait. In the
        caller's transaction (the row stays locked until it ends)."""
        locked = """SELECT tokens, extract(epoch FROM clock_timestamp() - updated_at)::float8 AS elapsed
                    FROM notification_rate_buckets WHERE key = $1 FOR UPDATE"""
        row = await self._conn.fetchrow(locked, key)
        if row is None:  # a new bucket, full (made once per key: every later take is the read and the write)
            await self._conn.execute(
                """INSERT INTO notification_rate_buckets (key, tokens, updated_at)
                   VALUES ($1, $2, clock_timestamp()) ON CONFLICT (key) DO NOTHING""",
                key,
                limit.burst,
            )
            row = await self._conn.fetchrow(locked, key)
        assert row is not None
        tokens, wait = limit.take(row["tokens"], row["elapsed"], cost)
        await self._conn.execute(
            "UPDATE notification_rate_buckets SET tokens = $2, updated_at = clock_timestamp() WHERE key = $1",
            key,
            tokens,
        )
        return wait

    # --- deliveries: operators' view ---------------------------------------------------------------
    async def list(
        self,
        *,
        owner: str | None = None,
        state: str | None = None,
        channel: str | None = None,
        workset_id: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[DeliveryRow]:
        rows = await self._conn.fetch(
            """SELECT * FROM notification_deliveries
               WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR state = $2)
                 AND ($3::text IS NULL OR channel = $3) AND ($4::text IS NULL OR workset_id = $4)
                 AND ($5::bigint IS NULL OR id < $5)
               ORDER BY id DESC LIMIT $6""",
            owner,
            state,
            channel,
            workset_id,
            before_id,
            limit,
        )
        return [_delivery(r) for r in rows]

    async def get(self, delivery_id: int, *, for_update: bool = False) -> DeliveryRow | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM notification_deliveries WHERE id = $1" + (" FOR UPDATE" if for_update else ""),
            delivery_id,
        )
        return _delivery(row) if row else None

    async def resend(self, delivery_id: int, actor: str) -> DeliveryRow:
        """A failed delivery gets a fresh budget and is due now; its key (and message) stay the same."""
        row = await self._conn.fetchrow(
            """UPDATE notification_deliveries
               SET state = 'pending', attempts = 0, next_attempt_at = clock_timestamp(), resent_at = clock_timestamp(),
                   resent_by = $2, updated_at = clock_timestamp()
               WHERE id = $1 RETURNING *""",
            delivery_id,
            actor,
        )
        await self._conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        assert row is not None
        return _delivery(row)

    async def counts(self, owner: str | None = None) -> dict[str, int]:
        rows = await self._conn.fetch(
            """SELECT state, count(*) AS n FROM notification_deliveries
               WHERE $1::text IS NULL OR owner = $1 GROUP BY state""",
            owner,
        )
        return {r["state"]: r["n"] for r in rows}


class FactsRepository:
    """What messages say, read from the tables other services own (read-only)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def workset(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            """SELECT id, tenant_id, name, state, attempt, retry_count, max_retries, cluster, region,
                      spec->>'pipeline' AS pipeline, spec->>'export_uri' AS export_uri,
                      CASE WHEN jsonb_typeof(spec->'samples') = 'array'
                           THEN jsonb_array_length(spec->'samples') ELSE 0 END AS samples
               FROM worksets WHERE id = $1""",
            workset_id,
        )
        return dict(row) if row else None

    async def validation(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            "SELECT ok, findings, estimate FROM workset_validations WHERE workset_id = $1", workset_id
        )
        if row is None:
            return None
        return {
            "ok": row["ok"],
            "findings": json.loads(row["findings"]),
            "estimate": json.loads(row["estimate"]) if row["estimate"] else None,
        }

    async def diagnosis(self, workset_id: str, up_to_attempt: int | None) -> dict[str, Any] | None:
        """The diagnosis of the latest failed attempt (up to `up_to_attempt`)."""
        row = await self._conn.fetchrow(
            """SELECT * FROM diagnoses WHERE workset_id = $1 AND ($2::int IS NULL OR attempt <= $2)
               ORDER BY attempt DESC LIMIT 1""",
            workset_id,
            up_to_attempt,
        )
        if row is None:
            return None
        doc = dict(row)
        doc["candidates"] = json.loads(row["candidates"])
        return doc

    async def has_diagnoses(self, workset_id: str) -> bool:
        return bool(
            await self._conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM diagnoses WHERE workset_id = $1)", workset_id
            )
        )

    async def retry_number(self, event_id: uuid.UUID) -> int | None:
        """Which retry the transition of `event_id` (into retry_wait) was, counted since the workset was
        last requeued by an operator (a requeue gives a fresh budget); None without such a transition."""
        return await self._conn.fetchval(  # type: ignore[no-any-return]
            """WITH this AS (SELECT workset_id, version FROM workset_history WHERE event_id = $1),
                    since AS (SELECT coalesce(max(h.version), 0) AS v FROM workset_history h, this
                              WHERE h.workset_id = this.workset_id AND h.version < this.version
                                AND h.to_state = 'queued' AND h.from_state IN ('failed', 'dead_lettered'))
               SELECT CASE WHEN EXISTS (SELECT 1 FROM this) THEN count(*) END
               FROM workset_history h, this, since
               WHERE h.workset_id = this.workset_id AND h.to_state = 'retry_wait'
                 AND h.version <= this.version AND h.version > since.v""",
            event_id,
        )

    async def actuals(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM workset_actuals WHERE workset_id = $1", workset_id)
        return dict(row) if row else None

    async def transition(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            "SELECT from_state, to_state, actor, reason FROM workset_history WHERE event_id = $1", event_id
        )
        return dict(row) if row else None

    async def dead_letter(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM dead_letters WHERE workset_id = $1", workset_id)
        return dict(row) if row else None

    async def running_on(self, cluster: str) -> int:
        return int(await self._conn.fetchval("SELECT count(*) FROM slot_leases WHERE cluster = $1", cluster))

    async def dead_letter_pressure(self, window_minutes: int) -> dict[str, Any]:
        """Worksets dead-lettered in the window, those still waiting, and who and what they are."""
        row = await self._conn.fetchrow(
            """SELECT count(*) FILTER (WHERE parked_at > now() - make_interval(mins => $1)) AS recent,
                      count(*) AS waiting
               FROM dead_letters WHERE requeued_at IS NULL""",
            window_minutes,
        )
        assert row is not None
        top: dict[str, dict[str, int]] = {}
        for column in ("tenant_id", "last_code"):
            rows = await self._conn.fetch(
                f"""SELECT coalesce({column}, '-') AS k, count(*) AS n FROM dead_letters
                    WHERE requeued_at IS NULL AND parked_at > now() - make_interval(mins => $1)
                    GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5""",
                window_minutes,
            )
            top[column] = {r["k"]: r["n"] for r in rows}
        return {
            "recent": row["recent"],
            "waiting": row["waiting"],
            "by_tenant": top["tenant_id"],
            "by_code": top["last_code"],
        }
