"""Settings: the profile, API keys and NATS credentials (created and shown once, revoked), invitations for
colleagues to sign up into the tenant, and notification preferences with the latest deliveries. Each goes
through the service the API uses (ApiKeyService, NatsCredentialService, NotificationAdmin), scoped by the
API's `tenant_for`."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from aiohttp import web
from pydantic import ValidationError

from services.portal.api.access import actor_of, principal_of, tenant_for
from services.portal.api.context import SECURITY
from services.portal.api.errors import ApiError
from services.portal.api.notifications import NOTIFICATION_ADMIN
from services.portal.web.guard import SIGNED_IN
from services.portal.web.render import render, see_other
from services.portal.web.store import InvitationRepository
from stamen.auth.errors import AuthError
from stamen.customers.repository import CustomerRepository
from stamen.diagnostics.codes import Severity
from stamen.natsauth import NatsCredentialService, inbox_prefix, intake_subject
from stamen.notifications.errors import NotificationError
from stamen.notifications.kinds import kinds_for
from stamen.notifications.preferences import NotificationPreferences, PreferencesInput
from stamen.service.keys import POOL

_EMAIL_MAX = 254


def _tenant(request: web.Request, asked: str | None) -> str | None:
    """The customer's own tenant; an operator works on the tenant it names (None: choose one first)."""
    principal = principal_of(request)
    if principal.is_operator and not asked:
        return None
    return tenant_for(request, asked)


async def _context(request: web.Request, tenant: str | None, **shown: Any) -> dict[str, Any]:
    principal = principal_of(request)
    context: dict[str, Any] = {
        "tenant": tenant,
        "session": request.get(SIGNED_IN),
        "keys": [],
        "credentials": [],
        "invitations": [],
        "customers": [],
        "intake_subject": intake_subject(tenant) if tenant else None,
        "inbox_prefix": inbox_prefix(tenant) if tenant else None,
        "created_key": None,
        "created_seed": None,
        "invitation_link": None,
        "error": None,
        "notifications": None,
        "deliveries": [],
        "kinds": [],
        "severities": [v.value for v in Severity],
        **shown,
    }
    async with request.app[POOL].acquire() as conn:
        if tenant is None:
            context["customers"] = (
                await CustomerRepository(conn).page(limit=500) if principal.is_operator else []
            )
        else:
            context["invitations"] = await InvitationRepository(conn).for_customer(tenant)
    if tenant is not None:
        keys = request.app[SECURITY].keys
        assert keys is not None
        context["keys"] = await keys.list_keys(tenant)
        context["credentials"] = await NatsCredentialService(request.app[POOL]).list_credentials(tenant)
        admin = request.app[NOTIFICATION_ADMIN]
        try:
            context["notifications"] = await admin.preferences(tenant)
            context["deliveries"] = await admin.deliveries(owner=tenant, limit=10)
        except NotificationError as exc:  # e.g. SNS or the secret store not answering: say so, show the rest
            context["notifications_error"] = str(exc)
        context["kinds"] = [k.value for k in kinds_for(tenant)]
    context.setdefault("notifications_error", None)
    return context


async def page(request: web.Request) -> web.Response:
    tenant = _tenant(request, request.query.get("tenant") or None)
    return await render(request, "settings.html", await _context(request, tenant))


async def _form_tenant(request: web.Request) -> tuple[Any, str]:
    form = await request.post()
    tenant = _tenant(request, str(form.get("tenant", "")) or None)
    if tenant is None:
        raise ApiError(400, "TENANT_REQUIRED", "operators must say which tenant (tenant)")
    return form, tenant


def _back(tenant: str, notice: str) -> NoReturn:
    see_other("/settings", notice=notice, **({"tenant": tenant} if tenant else {}))


async def create_api_key(request: web.Request) -> web.Response:
    form, tenant = await _form_tenant(request)
    name = str(form.get("name", "")).strip()
    ttl = str(form.get("ttl_days", "")).strip()
    keys = request.app[SECURITY].keys
    assert keys is not None
    try:
        if not name or len(name) > 100:
            raise ApiError(400, "API_KEY_REQUEST_INVALID", "name: give the key a name of 1 to 100 characters")
        created = await keys.create(tenant, name, ttl_days=int(ttl) if ttl.isdigit() else None)
    except (AuthError, ApiError) as exc:
        return await render(
            request, "settings.html", await _context(request, tenant, error=str(exc)), status=400
        )
    return await render(request, "settings.html", await _context(request, tenant, created_key=created))


async def revoke_api_key(request: web.Request) -> web.Response:
    _, tenant = await _form_tenant(request)
    keys = request.app[SECURITY].keys
    assert keys is not None
    await keys.revoke(tenant, request.match_info["key_id"])  # another tenant's key: API_KEY_NOT_FOUND (404)
    _back(tenant if principal_of(request).is_operator else "", "key-revoked")


async def create_nats_credential(request: web.Request) -> web.Response:
    form, tenant = await _form_tenant(request)
    name = str(form.get("name", "")).strip()
    try:
        if not name or len(name) > 100:
            raise ApiError(400, "NATS_CREDENTIAL_REQUEST_INVALID", "name: 1 to 100 characters")
        created = await NatsCredentialService(request.app[POOL]).create(tenant, name)
    except (AuthError, ApiError) as exc:
        return await render(
            request, "settings.html", await _context(request, tenant, error=str(exc)), status=400
        )
    return await render(request, "settings.html", await _context(request, tenant, created_seed=created))


async def revoke_nats_credential(request: web.Request) -> web.Response:
    _, tenant = await _form_tenant(request)
    await NatsCredentialService(request.app[POOL]).revoke(tenant, request.match_info["credential_id"])
    _back(tenant if principal_of(request).is_operator else "", "credential-revoked")


async def invite(request: web.Request) -> web.Response:
    """An invitation link for a colleague: the link (shown once) lets that address sign up into this tenant."""
    form, tenant = await _form_tenant(request)
    email = str(form.get("email", "")).strip().lower()
    if "@" not in email or len(email) > _EMAIL_MAX or any(c.isspace() for c in email):
        context = await _context(request, tenant, error="email: give the colleague's e-mail address")
        return await render(request, "settings.html", context, status=400)
    token = secrets.token_urlsafe(32)
    days = request.app[SECURITY].portal.portal_invitation_days
    async with request.app[POOL].acquire() as conn:
        if await CustomerRepository(conn).get(tenant) is None:
            raise ApiError(404, "CUSTOMER_NOT_FOUND", f"customer {tenant!r} does not exist")
        await InvitationRepository(conn).add(
            customer_id=tenant,
            email=email,
            token_hash=hashlib.sha256(token.encode()).hexdigest(),
            invited_by=actor_of(request),
            expires_at=datetime.now(UTC) + timedelta(days=days),
        )
    link = f"{request.scheme}://{request.host}/signup?invite={token}"
    return await render(
        request, "settings.html", await _context(request, tenant, invitation_link=(email, link))
    )


async def revoke_invitation(request: web.Request) -> web.Response:
    _, tenant = await _form_tenant(request)
    try:
        invitation_id = uuid.UUID(request.match_info["invitation_id"])
    except ValueError:
        raise ApiError(404, "INVITATION_NOT_FOUND", "no such invitation") from None
    async with request.app[POOL].acquire() as conn:
        if not await InvitationRepository(conn).revoke(tenant, invitation_id):
            raise ApiError(404, "INVITATION_NOT_FOUND", "no such open invitation")
    _back(tenant if principal_of(request).is_operator else "", "invitation-revoked")


def _words(value: object) -> list[str]:
    return [w for w in re.split(r"[,\s;]+", str(value or "")) if w]


def preferences_from_form(form: Any, current: NotificationPreferences) -> PreferencesInput:
    """The preferences the form asks for: its fields over the current preferences (what the form does not
    show, such as each channel's event kinds, stays). Secrets left empty stay as they are."""
    doc = current.model_dump(mode="json")

    def on(name: str) -> bool:
        return bool(form.get(name) == "on")

    doc["only_final_failures"] = on("only_final_failures")
    doc["sns"].update(
        enabled=on("sns_enabled"),
        emails=_words(form.get("sns_emails")),
        sms=_words(form.get("sns_sms")),
        email_min_severity=form.get("email_min_severity", "info"),
        sms_min_severity=form.get("sms_min_severity", "error"),
    )
    doc["linear"].update(
        enabled=on("linear_enabled"), team_id=str(form.get("linear_team_id", "")).strip() or None
    )
    doc["webhook"].update(
        enabled=on("webhook_enabled"),
        url=str(form.get("webhook_url", "")).strip() or None,
        format=form.get("webhook_format", "json"),
    )
    doc["digest"].update(enabled=on("digest_enabled"), interval_minutes=form.get("digest_minutes") or 60)
    doc["quiet_hours"].update(
        enabled=on("quiet_enabled"),
        start=form.get("quiet_start") or "22:00",
        end=form.get("quiet_end") or "07:00",
        timezone=form.get("quiet_timezone") or "UTC",
    )
    if api_key := str(form.get("linear_api_key", "")).strip():
        doc["linear"]["api_key"] = api_key
    if secret := str(form.get("webhook_secret", "")).strip():
        doc["webhook"]["secret"] = secret
    return PreferencesInput.model_validate(doc)


async def save_notifications(request: web.Request) -> web.Response:
    form, tenant = await _form_tenant(request)
    admin = request.app[NOTIFICATION_ADMIN]
    try:
        current = (await admin.preferences(tenant)).preferences
        update = preferences_from_form(form, current)
        await admin.set_preferences(tenant, update, actor=actor_of(request))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        context = await _context(request, tenant, error=f"Notification preferences not saved: {problems}")
        return await render(request, "settings.html", context, status=400)
    except NotificationError as exc:
        context = await _context(request, tenant, error=f"Notification preferences not saved: {exc}")
        return await render(request, "settings.html", context, status=exc.http_status)
    _back(tenant if principal_of(request).is_operator else "", "notifications-saved")
