"""The isolation matrix, over the route table: a route added to api/routes.py is covered automatically."""

from __future__ import annotations

from typing import Any

from services.portal.api.registry import Aim, Route
from services.portal.api.routes import ROUTES
from stamen.store.unit_of_work import UnitOfWork
from tests.api.conftest import World

SCOPED = [r for r in ROUTES if r.tenant_scoped]
# Customers are refused these whatever the resource (the S3 event endpoint: secret header or an operator).
OPERATOR_ONLY = [r for r in ROUTES if r.access in ("operator", "events")]
PUBLIC = [r for r in ROUTES if r.access == "public"]
# Routes any principal may call that name no tenant, and why none of them shows a customer anything of
# another tenant. A new route lands here only by a deliberate edit; the tests below check the claims.
TENANT_FREE = {
    "auth_logout": "signs the caller itself out; reads nothing",
    "customers_list": "a customer gets its own row only",
    "worksets_schema": "the JSON Schema of a workset spec, the same for everyone",
    "clusters_list": "a customer sees only its own running worksets and no other customer's bucket",
    "regions_list": "the configured region, the clusters' regions and their health: no tenant data",
    "diagnose": "classifies the text the caller sends against the catalog; reads and stores nothing",
}


async def call(world: World, route: Route, aim: Aim, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await world.client.request(
        route.method,
        route.url(aim),
        params=dict(aim.query),
        json=aim.json,
        headers={**aim.headers, **headers},
    )
    body = await response.json() if response.content_type == "application/json" else {}
    return response.status, body


def test_every_route_is_scoped_operator_only_public_or_declared_tenant_free() -> None:
    problems = []
    for r in ROUTES:
        classes = [
            name
            for name, member in (
                ("tenant-scoped", r.tenant_scoped),
                ("operator-only", r in OPERATOR_ONLY),
                ("public", r in PUBLIC),
                ("tenant-free", r.name in TENANT_FREE),
            )
            if member
        ]
        if len(classes) != 1:
            problems.append(
                f"{r.method} {r.path} ({r.name}): {classes or 'unclassified'}; make it tenant_scoped "
                "with an aim=, operator-only, or add it to TENANT_FREE with the reason it leaks nothing"
            )
    assert not problems, "\n".join(problems)
    assert set(TENANT_FREE) <= {r.name for r in ROUTES}, "TENANT_FREE names a route that no longer exists"
    # Without credentials there is no tenant to check against: only the sign-in flows are public.
    assert {r.tag for r in PUBLIC} == {"auth"}, [r.name for r in PUBLIC if r.tag != "auth"]


def test_the_table_declares_tenant_scoped_routes_of_every_kind() -> None:
    names = {r.name for r in SCOPED}
    assert {
        "worksets_get",
        "worksets_list",
        "worksets_cancel",
        "customers_usage",
        "api_keys_revoke",
        "worksets_create",
    } <= names
    assert all(r.aim is not None for r in SCOPED)


async def test_tenant_a_gets_404_for_tenant_b_and_the_operator_sees_both(world: World) -> None:
    a, b = world.a, world.b
    failures: list[str] = []
    for route in SCOPED:
        assert route.aim is not None
        for label, headers in (("api key", world.key(a)), ("id token", world.bearer(a.id_token))):
            status, body = await call(world, route, route.aim(b.target), headers)
            if (
                status != 404
                or not str(body.get("code", "")).endswith("NOT_FOUND")
                or b.id in str(body.get("details", {}).get("spec", ""))
            ):
                failures.append(f"{route.method} {route.path} as A ({label}) on B: {status} {body}")
        # A on its own resources is not refused (the 404 above is about the tenant, not a broken route).
        status, body = await call(world, route, route.aim(a.target), world.key(a))
        if status in (404, 401) or status >= 500:
            failures.append(f"{route.method} {route.path} as A on A: {status} {body}")
        status, body = await call(world, route, route.aim(b.target), world.operator)
        if status in (401, 403, 404) or status >= 500:
            failures.append(f"{route.method} {route.path} as operator on B: {status} {body}")
    assert not failures, "\n".join(failures)


async def test_operator_only_routes_refuse_customers(world: World) -> None:
    """Every operator-only route, with a customer's API key and its bearer token (one world for all: the
    routes share it, and a world per route cost the suite minutes)."""
    failures = []
    for route in OPERATOR_ONLY:
        aim = Aim(
            path={p: world.b.target.dead_letter_id if p == "workset_id" else "x" for p in route.path_params},
            json={},
        )
        for headers in (world.key(world.a), world.bearer(world.a.id_token)):
            status, body = await call(world, route, aim, headers)
            if not (status == 403 and body.get("code") == "AUTH_FORBIDDEN"):
                failures.append(f"{route.name}: {status} {body}")
    assert len(OPERATOR_ONLY) >= 20 and not failures, "\n".join(failures)


async def test_listings_show_a_customer_only_its_own_tenant(world: World) -> None:
    mine = await (await world.client.get("/api/v1/worksets", headers=world.key(world.a))).json()
    assert mine["items"] and {w["tenant"] for w in mine["items"]} == {world.a.id}
    everyone = await (await world.client.get("/api/v1/worksets?limit=1", headers=world.operator)).json()
    assert len(everyone["items"]) == 1 and everyone["next_cursor"]
    seen = [everyone["items"][0]["id"]]
    cursor = everyone["next_cursor"]
    while cursor:
        page = await (
            await world.client.get(
                "/api/v1/worksets", params={"limit": "1", "cursor": cursor}, headers=world.operator
            )
        ).json()
        seen += [w["id"] for w in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 4  # two per tenant, each once, across keyset pages
    customers = await (await world.client.get("/api/v1/customers", headers=world.key(world.a))).json()
    assert [c["customer_id"] for c in customers["items"]] == [world.a.id]
    dead = await (await world.client.get("/api/v1/dlq", headers=world.operator)).json()
    assert {d["workset_id"] for d in dead["items"]} == {
        world.a.target.dead_letter_id,
        world.b.target.dead_letter_id,
    }


async def _shared_cluster(world: World) -> str:
    """A cluster whose data locations include tenant B's bucket, with one workset of each tenant on it."""
    b_bucket = (
        await (await world.client.get(f"/api/v1/customers/{world.b.id}", headers=world.operator)).json()
    )["s3_bucket"]
    added = await world.client.post(
        "/api/v1/clusters",
        headers=world.operator,
        json={
            "name": "shared-1",
            "region": "us-west-2",
            "max_concurrent": 8,
            "data_locations": [f"s3://{b_bucket}/ref", "reference-data", "us-west-2"],
        },
    )
    assert added.status == 201, await added.text()
    async with UnitOfWork(world.pool) as uow:
        for tenant in (world.a, world.b):
            await uow.slots.acquire_lease(
                workset_id=tenant.target.workset_id,
                tenant_id=tenant.id,
                cluster="shared-1",
                holder="test",
                attempt=1,
            )
        await uow.commit()
    return b_bucket


async def test_tenant_free_routes_show_a_customer_nothing_of_another_tenant(world: World) -> None:
    a, b = world.a, world.b
    b_bucket = await _shared_cluster(world)
    b_marks = (b.id, b.target.workset_id, b.target.dead_letter_id, b_bucket)
    for route in (r for r in ROUTES if r.name in TENANT_FREE):
        # Not A's id token on logout: that would sign A out for the rest of the test.
        credentials = (
            [world.key(a)] if route.name == "auth_logout" else [world.key(a), world.bearer(a.id_token)]
        )
        for headers in credentials:
            response = await world.client.request(route.method, route.full_path, headers=headers)
            text = await response.text()
            assert response.status < 500, (route.name, response.status, text)
            assert not [m for m in b_marks if m in text], (route.name, text)
    clusters = await (await world.client.get("/api/v1/clusters", headers=world.key(a))).json()
    [shared] = [c for c in clusters["items"] if c["name"] == "shared-1"]
    assert shared["running"] == 1  # A's own workset; B's is not counted for A
    assert shared["data_locations"] == ["reference-data", "us-west-2"]
    everything = await (await world.client.get("/api/v1/clusters", headers=world.operator)).json()
    [shared] = [c for c in everything["items"] if c["name"] == "shared-1"]
    assert shared["running"] == 2 and shared["data_locations"][0] == f"s3://{b_bucket}/ref"
    for headers in (world.key(a), world.bearer(a.id_token)):
        customers = await (await world.client.get("/api/v1/customers", headers=headers)).json()
        assert [c["customer_id"] for c in customers["items"]] == [a.id]


async def test_pages_show_a_customer_only_its_own_worksets(world: World) -> None:
    a, b = world.a, world.b
    for headers in (world.key(a), world.bearer(a.id_token)):
        page = await world.client.get("/worksets", headers=headers)
        text = await page.text()
        assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        assert a.target.workset_id in text and a.target.dead_letter_id in text
        assert b.id not in text and b.target.workset_id not in text and b.target.dead_letter_id not in text
        other = await world.client.get(f"/worksets/{b.target.workset_id}", headers=headers)
        assert other.status == 404 and b.id not in await other.text()
        own = await world.client.get(f"/worksets/{a.target.workset_id}", headers=headers)
        assert own.status == 200 and a.target.workset_id in await own.text()
    missing = await world.client.get("/worksets/ws-does-not-exist", headers=world.key(a))
    assert missing.status == 404  # the same answer as for B's workset
    everyone = await (await world.client.get("/worksets", headers=world.operator)).text()
    assert a.target.workset_id in everyone and b.target.workset_id in everyone
    assert (await world.client.get(f"/worksets/{b.target.workset_id}", headers=world.operator)).status == 200
