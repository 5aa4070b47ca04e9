"""Preferences and deliveries as the API and the CLI use them: read and set an owner's preferences
(secrets to the secret store, e-mail/SMS subscriptions to SNS), list deliveries, resend a failed one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from stamen.aws_clients import client_config
from stamen.domain.workset import InvalidTenantId, check_tenant_id
from stamen.notifications.channels import sns
from stamen.notifications.channels.webhook import url_refused
from stamen.notifications.errors import (
    ChannelUnavailable,
    DeliveryNotFound,
    DeliveryNotResendable,
    OwnerNotFound,
    PreferencesInvalid,
)
from stamen.notifications.kinds import OPERATORS, at_least
from stamen.notifications.preferences import NotificationPreferences, PreferencesInput
from stamen.notifications.repository import DeliveryRow, NotificationRepository, SubscriptionRow
from stamen.notifications.secrets import (
    LINEAR_API_KEY,
    WEBHOOK_SECRET,
    SecretStore,
    open_secret_store,
    secret_name,
)
from stamen.notifications.settings import NotifySettings


@dataclass(frozen=True)
class PreferencesView:
    owner: str
    preferences: NotificationPreferences
    linear_api_key_set: bool
    webhook_secret_set: bool
    sns_topic_arn: str | None
    subscriptions: list[SubscriptionRow]
    updated_at: datetime | None
    updated_by: str | None


class NotificationAdmin:
    def __init__(
        self, pool: asyncpg.Pool, settings: NotifySettings, secrets: SecretStore, sns_client: Any
    ) -> None:
        self._pool = pool
        self.settings = settings
        self._secrets = secrets
        self._sns = sns_client

    # --- preferences ---------------------------------------------------------------------------------
    async def preferences(self, owner: str) -> PreferencesView:
        topic = await self._topic_of(owner)
        async with self._pool.acquire() as conn:
            repo = NotificationRepository(conn)
            prefs, updated_at, updated_by = await repo.preferences(owner)
            subscriptions = await repo.subscriptions(owner)
        # A pending e-mail subscription becomes confirmed when its owner clicks AWS's link: ask SNS.
        if any(s.status == "pending_confirmation" for s in subscriptions):
            subscriptions = await self._refresh(owner, subscriptions)
        return PreferencesView(
            owner=owner,
            preferences=prefs,
            linear_api_key_set=bool(await self._secrets.get(secret_name(owner, LINEAR_API_KEY))),
            webhook_secret_set=bool(await self._secrets.get(secret_name(owner, WEBHOOK_SECRET))),
            sns_topic_arn=topic,
            subscriptions=subscriptions,
            updated_at=updated_at,
            updated_by=updated_by,
        )

    async def set_preferences(self, owner: str, update: PreferencesInput, *, actor: str) -> PreferencesView:
        """Check everything first; then the secrets, the preferences, the subscriptions. A failure of
        SNS after the preferences were saved is NOTIFY_CHANNEL_UNAVAILABLE: sending them again finishes."""
        topic = await self._topic_of(owner)
        problems = update.problems(owner)
        if update.webhook.url is not None:
            why = url_refused(
                update.webhook.url,
                allow_http=self.settings.webhook_allow_http,
                allow_private=self.settings.webhook_allow_private,
            )
            if why:
                problems.append(("webhook.url", why))
        if update.linear.enabled and update.linear.api_key is None:
            if not await self._secrets.get(secret_name(owner, LINEAR_API_KEY)):
                problems.append(
                    ("linear.api_key", "Linear is enabled: give its API key (write-only, stored once)")
                )
        if update.webhook.enabled and update.webhook.secret is None:
            if not await self._secrets.get(secret_name(owner, WEBHOOK_SECRET)):
                problems.append(
                    (
                        "webhook.secret",
                        "the webhook is enabled: give its signing secret (>= 16 characters, write-only)",
                    )
                )
        if (update.sns.emails or update.sns.sms) and topic is None:
            where = (
                "STAMEN_NOTIFY_OPERATOR_TOPIC_ARN is not set" if owner == OPERATORS else "it has no SNS topic"
            )
            problems.append(("sns.emails", f"{owner} cannot have e-mail or SMS subscriptions: {where}"))
        if problems:
            raise PreferencesInvalid(
                "; ".join(f"{field}: {why}" for field, why in problems),
                errors=[{"field": field, "message": why} for field, why in problems],
            )
        if update.linear.api_key is not None:
            await self._secrets.put(
                secret_name(owner, LINEAR_API_KEY), update.linear.api_key.get_secret_value()
            )
        if update.webhook.secret is not None:
            await self._secrets.put(
                secret_name(owner, WEBHOOK_SECRET), update.webhook.secret.get_secret_value()
            )
        prefs = update.stored()
        async with self._pool.acquire() as conn:
            await NotificationRepository(conn).save_preferences(owner, prefs, actor)
        await self._sync_subscriptions(owner, prefs, topic)
        return await self.preferences(owner)

    async def _topic_of(self, owner: str) -> str | None:
        if owner == OPERATORS:
            return self.settings.operator_topic_arn
        try:
            check_tenant_id(owner)
        except InvalidTenantId:
            raise OwnerNotFound(f"customer {owner!r} does not exist", customer_id=owner) from None
        async with self._pool.acquire() as conn:
            exists, topic = await NotificationRepository(conn).customer_topic(owner)
        if not exists:
            raise OwnerNotFound(f"customer {owner!r} does not exist", customer_id=owner)
        return topic

    async def _sync_subscriptions(
        self, owner: str, prefs: NotificationPreferences, topic: str | None
    ) -> None:
        wanted = {
            ("email", e): sns.WantedSubscription(
                "email", e, {"severity": at_least(prefs.sns.email_min_severity)}
            )
            for e in prefs.sns.emails
        } | {
            ("sms", n): sns.WantedSubscription("sms", n, {"severity": at_least(prefs.sns.sms_min_severity)})
            for n in prefs.sns.sms
        }
        async with self._pool.acquire() as conn:
            repo = NotificationRepository(conn)
            existing = {(s.protocol, s.endpoint): s for s in await repo.subscriptions(owner)}
            try:
                for key, old in existing.items():
                    if key not in wanted or old.topic_arn != topic:
                        await sns.unsubscribe(self._sns, old.subscription_arn)
                        await repo.delete_subscription(owner, old.protocol, old.endpoint)
                if topic is None:
                    return
                for key, want in wanted.items():
                    current = existing.get(key)
                    # Subscribing again an address still pending makes AWS send its confirmation again.
                    if current is not None and current.topic_arn == topic and current.status == "confirmed":
                        if current.filter_policy != want.filter_policy:
                            arn = current.subscription_arn
                            await sns.set_filter_policy(self._sns, arn, want.filter_policy)
                            await repo.save_subscription(_row(owner, topic, arn, current.status, want))
                        continue
                    made = await sns.subscribe(self._sns, topic, want)
                    await repo.save_subscription(_row(owner, topic, made.subscription_arn, made.status, want))
            except sns.SubscriptionRefused as exc:
                field = "sns.sms" if exc.protocol == "sms" else "sns.emails"
                raise PreferencesInvalid(str(exc), errors=[{"field": field, "message": str(exc)}]) from None
            except (ClientError, BotoCoreError) as exc:
                raise ChannelUnavailable(
                    f"SNS could not update the subscriptions ({type(exc).__name__}); the preferences are saved: "
                    "send them again to finish",
                ) from None

    async def _refresh(self, owner: str, subscriptions: list[SubscriptionRow]) -> list[SubscriptionRow]:
        fresh = []
        async with self._pool.acquire() as conn:
            repo = NotificationRepository(conn)
            for s in subscriptions:
                if s.status == "pending_confirmation":
                    try:
                        status = await sns.status(self._sns, s.subscription_arn)
                    except (ClientError, BotoCoreError):
                        status = s.status  # SNS unreachable: show what we knew
                    if status != s.status:
                        s = SubscriptionRow(**{**s.__dict__, "status": status})
                        await repo.save_subscription(s)
                fresh.append(s)
        return fresh

    # --- deliveries ----------------------------------------------------------------------------------
    async def deliveries(
        self,
        *,
        owner: str | None,
        state: str | None = None,
        channel: str | None = None,
        workset_id: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[DeliveryRow]:
        async with self._pool.acquire() as conn:
            return await NotificationRepository(conn).list(
                owner=owner,
                state=state,
                channel=channel,
                workset_id=workset_id,
                before_id=before_id,
                limit=limit,
            )

    async def delivery(self, delivery_id: int, *, owner: str | None = None) -> DeliveryRow:
        """One delivery; with `owner`, another owner's is not found (no existence leaks)."""
        async with self._pool.acquire() as conn:
            row = await NotificationRepository(conn).get(delivery_id)
        if row is None or (owner is not None and row.owner != owner):
            raise DeliveryNotFound(f"no notification delivery {delivery_id}", delivery_id=delivery_id)
        return row

    async def resend(self, delivery_id: int, *, actor: str) -> DeliveryRow:
        async with self._pool.acquire() as conn, conn.transaction():
            repo = NotificationRepository(conn)
            row = await repo.get(delivery_id, for_update=True)
            if row is None:
                raise DeliveryNotFound(f"no notification delivery {delivery_id}", delivery_id=delivery_id)
            if row.state != "failed":
                raise DeliveryNotResendable(
                    f"delivery {delivery_id} is {row.state}; only failed deliveries are resent "
                    "(a delivered one was received; a pending one is still being tried)",
                    state=row.state,
                )
            return await repo.resend(delivery_id, actor)


def _row(owner: str, topic: str, arn: str, status: str, want: sns.WantedSubscription) -> SubscriptionRow:
    return SubscriptionRow(owner, want.protocol, want.endpoint, topic, arn, status, want.filter_policy)


@asynccontextmanager
async def open_admin(
    pool: asyncpg.Pool, settings: NotifySettings | None = None
) -> AsyncIterator[NotificationAdmin]:
    """The admin with its secret store and SNS client open (closed on exit)."""
    settings = settings or NotifySettings()
    async with AsyncExitStack() as stack:
        secrets = await stack.enter_async_context(open_secret_store(settings))
        client = await stack.enter_async_context(
            aioboto3.Session().client(
                "sns",
                region_name=settings.aws_region,
                endpoint_url=settings.aws_endpoint_url,
                config=client_config(),
            )
        )
        yield NotificationAdmin(pool, settings, secrets, client)
