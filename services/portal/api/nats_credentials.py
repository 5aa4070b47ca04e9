"""NATS credential endpoints, scoped to the caller's tenant (operators name one): create (seed shown
once), list, revoke. nats-server picks changes up when stamen re-renders its authorization block."""

from __future__ import annotations

from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import body, query, refuse_api_keys, reply, tenant_for
from stamen.natsauth import NatsCredentialRecord, NatsCredentialService, inbox_prefix, intake_subject
from stamen.service.keys import POOL


def credential_out(r: NatsCredentialRecord) -> m.NatsCredentialOut:
    return m.NatsCredentialOut(
        id=str(r.id),
        customer_id=r.customer_id,
        name=r.name,
        public_key=r.public_key,
        intake_subject=intake_subject(r.customer_id),
        inbox_prefix=inbox_prefix(r.customer_id),
        created_at=r.created_at,
        revoked_at=r.revoked_at,
    )


def _credentials(request: web.Request) -> NatsCredentialService:
    return NatsCredentialService(request.app[POOL])


async def create(request: web.Request) -> web.Response:
    req = await body(request, m.NatsCredentialCreate)
    tenant = tenant_for(request, req.customer_id)  # another tenant's: 404, whoever asks
    refuse_api_keys(request, "NATS credentials")
    created = await _credentials(request).create(tenant, req.name)
    return reply(m.NatsCredentialCreated(seed=created.seed, record=credential_out(created.record)), 201)


async def list_credentials(request: web.Request) -> web.Response:
    tenant = tenant_for(request, query(request, m.TenantQuery).tenant)
    items = await _credentials(request).list_credentials(tenant)
    return reply(m.NatsCredentialList(items=[credential_out(r) for r in items]))


async def revoke(request: web.Request) -> web.Response:
    tenant = tenant_for(request, query(request, m.TenantQuery).tenant)
    return reply(
        credential_out(await _credentials(request).revoke(tenant, request.match_info["credential_id"]))
    )
