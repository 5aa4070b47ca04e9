"""Which S3 buckets a tenant may use: its own and those operators grant (stamen.tenancy). A tenant sees its
own list; only operators grant and revoke. BucketGrantError is a CodedError: the API's error middleware answers it."""

from __future__ import annotations

from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import actor_of, body, query, reply, tenant_for
from stamen.service.keys import POOL
from stamen.tenancy import BucketGrant, BucketGrantRepository


def grant_out(g: BucketGrant) -> m.BucketGrantOut:
    return m.BucketGrantOut(
        tenant=g.tenant_id,
        bucket=g.bucket,
        access=g.access,
        granted_by=g.granted_by,
        granted_at=g.granted_at,
        note=g.note,
    )


async def list_buckets(request: web.Request) -> web.Response:
    tenant = tenant_for(request, query(request, m.TenantQuery).tenant)
    async with request.app[POOL].acquire() as conn:
        rights = await BucketGrantRepository(conn).tenant_buckets(tenant)
    items = [
        m.BucketOut(bucket=r.bucket, access=r.access, source=r.source, granted_by=r.granted_by, note=r.note)
        for r in rights.rights
    ]
    return reply(m.BucketList(tenant=tenant, items=items))


async def grant(request: web.Request) -> web.Response:
    req = await body(request, m.BucketGrantCreate)
    async with request.app[POOL].acquire() as conn:
        granted, created = await BucketGrantRepository(conn).grant(
            req.tenant, req.bucket, req.access, granted_by=actor_of(request), note=req.note
        )
    out = m.BucketGrantCreated(**grant_out(granted).model_dump(), created=created)
    return reply(out, 201 if created else 200)


async def revoke(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        revoked = await BucketGrantRepository(conn).revoke(
            request.match_info["tenant"], request.match_info["bucket"]
        )
    return reply(grant_out(revoked))
