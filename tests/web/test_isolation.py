"""The isolation matrix for pages, over the page table: a customer aiming any page at another tenant's
workset, key, credential, invitation, bucket or tenant gets a 403/404 and sees nothing of it, and nothing of
it changes. A page added to web/routes.py with a path parameter must be aimed here (the first test)."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from services.portal.web.routes import PAGES
from services.portal.web.store import InvitationRepository
from stamen.store.unit_of_work import UnitOfWork
from tests.web.conftest import Browser, World

NewBrowser = Callable[[], AbstractAsyncContextManager[Browser]]
_PARAM = re.compile(r"{(\w+)}")
# What each path parameter is aimed at: tenant B's resource of that kind (see `aims`).
AIMED = {"workset_id", "key_id", "credential_id", "invitation_id", "customer_id", "name", "action", "region"}


def test_every_page_parameter_has_an_aim() -> None:
    params = {p for page in PAGES for p in _PARAM.findall(page.path)}
    assert params <= AIMED | {"path"}, f"aim these at tenant B in test_isolation.py: {params - AIMED}"


async def aims(world: World) -> dict[str, str]:
    b = world.b
    async with world.pool.acquire() as conn:
        invitation = await InvitationRepository(conn).add(
            customer_id=b.id,
            email="b-colleague@lab.example",
            token_hash=f"h-{b.id}",
            invited_by="test",
            expires_at=datetime(2099, 1, 1, tzinfo=UTC),
        )
    return {
        "workset_id": b.target.workset_id,
        "key_id": b.target.api_key_id,
        "credential_id": b.target.nats_credential_id,
        "invitation_id": str(invitation.id),
        "customer_id": b.id,
        "name": "local",
        "action": "drain",
        "region": "us-west-2",
    }


def secrets_of_b(world: World, bucket: str, asked: str) -> list[str]:
    """What of tenant B a page must never show to A: B's ids and bucket, except the one A typed in."""
    b = world.b.target
    return [
        x
        for x in (b.workset_id, b.dead_letter_id, bucket, b.api_key_id, b.nats_credential_id)
        if x not in asked
    ]


async def test_a_customer_reaches_nothing_of_another_tenant(world: World, browser: NewBrowser) -> None:
    a, b = world.a, world.b
    targets = await aims(world)
    bucket = await _bucket_of(world, b.id)
    email, _ = await world.lab.user(a.id)
    async with browser() as browser_a:
        await browser_a.sign_in(email)
        checked = 0
        for page in PAGES:
            if not _PARAM.findall(page.path) or page.access == "public" or page.path.startswith("/static"):
                continue
            path = _PARAM.sub(lambda m: targets[m.group(1)], page.path)
            if page.method == "GET":
                status, body = await browser_a.get(path)
            else:
                response = await browser_a.post(path, {"tenant": b.id, "status": "suspended"})
                status, body = response.status, await response.text()
            assert status in (403, 404), f"{page.method} {path}: {status}"
            leaked = [x for x in secrets_of_b(world, bucket, path) if x in body]
            assert not leaked, f"{page.method} {path} shows {leaked}"
            checked += 1
        assert checked >= 14
        # Pages without a path parameter, pointed at tenant B by their query or form.
        for path in (
            f"/?tenant={b.id}",
            f"/worksets?tenant={b.id}",
            f"/usage?tenant={b.id}",
            f"/settings?tenant={b.id}",
            f"/usage.csv?tenant={b.id}",
            f"/files?bucket={bucket}",
            f"/files/download?bucket={bucket}&key=x",
        ):
            status, body = await browser_a.get(path)
            assert status == 404 and not [x for x in secrets_of_b(world, bucket, path) if x in body], path
        for path, form in (
            ("/settings/api-keys", {"tenant": b.id, "name": "sneaky"}),
            ("/settings/invitations", {"tenant": b.id, "email": "x@lab.example"}),
            ("/files/delete", {"bucket": bucket, "key": "x"}),
        ):
            response = await browser_a.post(path, form)
            assert response.status == 404, path
        bulk = await browser_a.post("/worksets/bulk", {"action": "cancel", "ids": b.target.workset_id})
        text = await bulk.text()
        assert bulk.status == 200 and "not found" in text and b.target.dead_letter_id not in text
        presign = await browser_a.session.post(
            "/uploads/presign",
            json={"bucket": bucket, "key": "x/y.fastq.gz", "size": 10},
            headers={"X-CSRF-Token": browser_a.csrf},
        )
        assert presign.status == 404 and "BUCKET_NOT_FOUND" in await presign.text()
    async with UnitOfWork(world.pool) as uow:  # nothing of B's changed
        assert (await uow.worksets.get(b.target.workset_id)).state.value == "submitted"
        assert (await uow.worksets.get(b.target.dead_letter_id)).state.value == "dead_lettered"
    async with world.client.get("/api/v1/worksets", headers=world.key(b)) as r:
        assert r.status == 200  # B's API key was not revoked


async def _bucket_of(world: World, tenant: str) -> str:
    async with world.pool.acquire() as conn:
        return str(await conn.fetchval("SELECT s3_bucket FROM customers WHERE customer_id = $1", tenant))
