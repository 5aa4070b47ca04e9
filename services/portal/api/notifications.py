"""Notification endpoints: a tenant's (and the operators') preferences, the deliveries made for them,
and resending a failed one (operators). Secrets are accepted, stored in the secret store, and only
ever answered with `..._set: true/false`. Its routes are declared here and joined into the table in
routes.py; their errors are stamen.notifications.errors (codes in docs/api.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from services.portal.api import models as m
from services.portal.api.access import (
    actor_of,
    body,
    query,
    reply,
    require_operator,
    tenant_for,
    visible_filter,
)
from services.portal.api.errors import ApiError
from services.portal.api.registry import Aim, Route
from stamen.notifications.channels.base import redact_url
from stamen.notifications.errors import DeliveryNotFound, NotificationError, PreferencesInvalid
from stamen.notifications.kinds import OPERATORS, DeliveryState, SubscriptionProtocol, SubscriptionStatus
from stamen.notifications.preferences import Channel, NotificationPreferences, PreferencesInput
from stamen.notifications.repository import DeliveryRow
from stamen.notifications.service import NotificationAdmin, PreferencesView, open_admin
from stamen.notifications.settings import NotifySettings
from stamen.service.keys import POOL, SETTINGS


# --- bodies -----------------------------------------------------------------------------------------
class PreferencesBody(PreferencesInput):
    customer_id: str | None = Field(
        default=None, pattern=m.TENANT, description="Operators: whose preferences."
    )
    operators: bool = Field(default=False, description="Operators: the operators' own preferences.")


class PreferencesQuery(m.Body):
    tenant: str | None = Field(default=None, pattern=m.TENANT, description="Operators: whose preferences.")
    operators: bool = Field(default=False, description="Operators: the operators' own preferences.")


class SubscriptionOut(BaseModel):
    protocol: SubscriptionProtocol
    endpoint: str
    status: SubscriptionStatus
    filter_policy: dict[str, list[str]]


class SecretsSet(BaseModel):
    linear_api_key_set: bool
    webhook_secret_set: bool


class PreferencesOut(BaseModel):
    owner: str
    preferences: NotificationPreferences
    secrets: SecretsSet = Field(
        description="Whether each secret is stored; secrets themselves are never shown."
    )
    sns_topic_arn: str | None
    subscriptions: list[SubscriptionOut]
    updated_at: datetime | None
    updated_by: str | None


ChannelName = Annotated[Channel, m.inline_enum(Channel)]


class DeliveryQuery(m.Body):
    tenant: str | None = Field(default=None, pattern=m.TENANT, description="Operators: one tenant only.")
    state: DeliveryState | None = None
    channel: ChannelName | None = None
    workset_id: str | None = Field(default=None, max_length=200)
    before: int | None = Field(default=None, ge=1, description="next_before of the previous page")
    limit: int = Field(default=50, ge=1, le=500)


class DeliveryOut(BaseModel):
    id: int
    owner: str
    event_id: str
    event_type: str
    kind: str
    workset_id: str | None
    channel: ChannelName
    recipient: str = Field(
        description="Topic ARN, Linear team id, or the webhook's scheme://host/… (its path can be a credential)."
    )
    idempotency_key: str
    severity: str
    title: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    reference: str | None
    created_at: datetime
    delivered_at: datetime | None
    resent_at: datetime | None
    resent_by: str | None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page.")


# --- helpers ----------------------------------------------------------------------------------------
NOTIFICATION_ADMIN = web.AppKey("notification_admin", NotificationAdmin)


def add_notifications(app: web.Application) -> None:
    """The preference service with its secret store and SNS client, opened once per process (opening
    the AWS clients takes longer than a request should)."""
    app.cleanup_ctx.append(_admin_ctx)


async def _admin_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = NotifySettings()
    if settings.aws_endpoint_url is None and app[SETTINGS].aws_endpoint_url:
        settings = settings.model_copy(update={"aws_endpoint_url": app[SETTINGS].aws_endpoint_url})
    async with open_admin(app[POOL], settings) as admin:
        app[NOTIFICATION_ADMIN] = admin
        yield


def api_error(exc: NotificationError) -> ApiError:
    return ApiError(exc.http_status, exc.code, str(exc), exc.details)


@asynccontextmanager
async def _admin(request: web.Request) -> AsyncIterator[NotificationAdmin]:
    try:
        yield request.app[NOTIFICATION_ADMIN]
    except NotificationError as exc:
        raise api_error(exc) from None


def preferences_out(view: PreferencesView) -> PreferencesOut:
    return PreferencesOut(
        owner=view.owner,
        preferences=view.preferences,
        secrets=SecretsSet(
            linear_api_key_set=view.linear_api_key_set, webhook_secret_set=view.webhook_secret_set
        ),
        sns_topic_arn=view.sns_topic_arn,
        subscriptions=[
            SubscriptionOut(
                protocol=s.protocol, endpoint=s.endpoint, status=s.status, filter_policy=s.filter_policy
            )
            for s in view.subscriptions
        ],
        updated_at=view.updated_at,
        updated_by=view.updated_by,
    )


def delivery_out(r: DeliveryRow) -> DeliveryOut:
    return DeliveryOut(
        id=r.id,
        owner=r.owner,
        event_id=r.event_id,
        event_type=r.event_type,
        kind=r.kind,
        workset_id=r.workset_id,
        channel=r.channel,
        recipient=redact_url(r.recipient) if r.channel == "webhook" else r.recipient,
        idempotency_key=r.idempotency_key,
        severity=r.severity,
        title=str(r.message.get("message", {}).get("title", "")),
        state=r.state,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        last_error=r.last_error,
        reference=r.reference,
        created_at=r.created_at,
        delivered_at=r.delivered_at,
        resent_at=r.resent_at,
        resent_by=r.resent_by,
    )


# --- handlers ---------------------------------------------------------------------------------------
def _owner(request: web.Request, tenant: str | None, operators: bool) -> str:
    """A tenant (the caller's own; operators name one), or, for operators only, the operators."""
    if not operators:
        return tenant_for(request, tenant)
    require_operator(request)
    if tenant is not None:
        raise api_error(
            PreferencesInvalid(
                "name a tenant or the operators, not both",
                errors=[{"field": "operators", "message": "drop the tenant, or operators=true"}],
            )
        )
    return OPERATORS


async def get_preferences(request: web.Request) -> web.Response:
    q = query(request, PreferencesQuery)
    owner = _owner(request, q.tenant, q.operators)
    async with _admin(request) as admin:
        return reply(preferences_out(await admin.preferences(owner)))


async def put_preferences(request: web.Request) -> web.Response:
    req = await body(request, PreferencesBody)
    owner = _owner(request, req.customer_id, req.operators)
    update = PreferencesInput.model_validate(req.model_dump(exclude={"customer_id", "operators"}))
    async with _admin(request) as admin:
        return reply(preferences_out(await admin.set_preferences(owner, update, actor=actor_of(request))))


async def list_deliveries(request: web.Request) -> web.Response:
    q = query(request, DeliveryQuery)
    owner = visible_filter(request, q.tenant)
    async with _admin(request) as admin:
        rows = await admin.deliveries(
            owner=owner,
            state=q.state,
            channel=q.channel,
            workset_id=q.workset_id,
            before_id=q.before,
            limit=q.limit + 1,
        )
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return reply(
        DeliveryList(items=[delivery_out(r) for r in rows], next_before=rows[-1].id if more else None)
    )


async def resend_delivery(request: web.Request) -> web.Response:
    require_operator(request)
    raw = request.match_info["delivery_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise api_error(DeliveryNotFound(f"no notification delivery {raw!r}", delivery_id=raw))
    async with _admin(request) as admin:
        return reply(delivery_out(await admin.resend(int(raw), actor=actor_of(request))))


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/notification-preferences",
        get_preferences,
        "notification_preferences_get",
        "A tenant's (or, operators=true, the operators') notification preferences; secrets only as set or not",
        "notifications",
        "principal",
        {200: PreferencesOut},
        query=PreferencesQuery,
        tenant_scoped=True,
        aim=lambda t: Aim(query={"tenant": t.tenant}),
    ),
    Route(
        "PUT",
        "/notification-preferences",
        put_preferences,
        "notification_preferences_set",
        "Set a tenant's (or the operators') notification preferences: channels, kinds, digest, quiet hours, "
        "write-only secrets",
        "notifications",
        "principal",
        {200: PreferencesOut},
        request=PreferencesBody,
        tenant_scoped=True,
        aim=lambda t: Aim(json={"customer_id": t.tenant}),
    ),
    Route(
        "GET",
        "/notifications",
        list_deliveries,
        "notifications_list",
        "Notification deliveries, newest first (?state=failed for the failed ones)",
        "notifications",
        "principal",
        {200: DeliveryList},
        query=DeliveryQuery,
        tenant_scoped=True,
        aim=lambda t: Aim(query={"tenant": t.tenant}),
    ),
    Route(
        "POST",
        "/notifications/{delivery_id}/resend",
        resend_delivery,
        "notifications_resend",
        "Resend a failed delivery with a fresh retry budget (operators)",
        "notifications",
        "operator",
        {200: DeliveryOut},
    ),
)
