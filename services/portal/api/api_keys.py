"""API key endpoints, scoped to the caller's tenant (operators name one): create (shown once), list, revoke."""

from __future__ import annotations

from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import body, query, refuse_api_keys, reply, tenant_for
from services.portal.api.context import SECURITY
from stamen.auth import ApiKeyService
from stamen.auth.api_keys import require_pepper
from stamen.auth.repository import ApiKeyRecord


def key_out(r: ApiKeyRecord) -> m.ApiKeyOut:
    return m.ApiKeyOut(
        id=str(r.id),
        customer_id=r.customer_id,
        name=r.name,
        prefix=r.prefix,
        created_at=r.created_at,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        last_used_at=r.last_used_at,
    )


def _keys(request: web.Request) -> ApiKeyService:
    keys = request.app[SECURITY].keys
    if keys is None:  # only in the local demo (auth off) without STAMEN_API_KEY_PEPPER
        require_pepper(request.app[SECURITY].auth)
    assert keys is not None
    return keys


async def create(request: web.Request) -> web.Response:
    req = await body(request, m.ApiKeyCreate)
    tenant = tenant_for(request, req.customer_id)  # another tenant's: 404, whoever asks
    refuse_api_keys(request, "API keys")
    created = await _keys(request).create(tenant, req.name, expires_at=req.expires_at, ttl_days=req.ttl_days)
    return reply(m.ApiKeyCreated(key=created.key, record=key_out(created.record)), 201)


async def list_keys(request: web.Request) -> web.Response:
    tenant = tenant_for(request, query(request, m.TenantQuery).tenant)
    return reply(m.ApiKeyList(items=[key_out(r) for r in await _keys(request).list_keys(tenant)]))


async def revoke(request: web.Request) -> web.Response:
    tenant = tenant_for(request, query(request, m.TenantQuery).tenant)
    return reply(key_out(await _keys(request).revoke(tenant, request.match_info["key_id"])))
