"""The isolation matrix, over the route table: a route added to api/routes.py is covered automatically."""

from __future__ import annotations

from typing import Any

import pytest

from services.portal.api.registry import Aim, Route
from services.portal.api.routes import ROUTES
from tests.api.conftest import World

SCOPED = [r for r in ROUTES if r.tenant_scoped]
OPERATOR_ONLY = [r for r in ROUTES if r.access == "operator"]


async def call(world: World, route: Route, aim: Aim, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await world.client.request(route.method, route.url(aim), params=dict(aim.query),
                                          json=aim.json, headers={**aim.headers, **headers})
    body = await response.json() if response.content_type == "application/json" else {}
    return response.status, body


def test_the_table_declares_tenant_scoped_routes_of_every_kind() -> None:
    names = {r.name for r in SCOPED}
    assert {"worksets_get", "worksets_list", "worksets_cancel", "customers_usage", "api_keys_revoke",
            "worksets_create"} <= names
    assert all(r.aim is not None for r in SCOPED)


async def test_tenant_a_gets_404_for_tenant_b_and_the_operator_sees_both(world: World) -> None:
    a, b = world.a, world.b
    failures: list[str] = []
    for route in SCOPED:
        assert route.aim is not None
        for label, headers in (("api key", world.key(a)), ("id token", world.bearer(a.id_token))):
            status, body = await call(world, route, route.aim(b.target), headers)
            if status != 404 or not str(body.get("code", "")).endswith("NOT_FOUND") or b.id in str(body.get(
                    "details", {}).get("spec", "")):
                failures.append(f"{route.method} {route.path} as A ({label}) on B: {status} {body}")
        # A on its own resources is not refused (the 404 above is about the tenant, not a broken route).
        status, body = await call(world, route, route.aim(a.target), world.key(a))
        if status in (404, 401) or status >= 500:
            failures.append(f"{route.method} {route.path} as A on A: {status} {body}")
        status, body = await call(world, route, route.aim(b.target), world.operator)
        if status in (401, 403, 404) or status >= 500:
            failures.append(f"{route.method} {route.path} as operator on B: {status} {body}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("route", OPERATOR_ONLY, ids=lambda r: r.name)
async def test_operator_only_routes_refuse_customers(world: World, route: Route) -> None:
    aim = Aim(path={p: world.b.target.dead_letter_id if p == "workset_id" else "x" for p in route.path_params},
              json={})
    for headers in (world.key(world.a), world.bearer(world.a.id_token)):
        status, body = await call(world, route, aim, headers)
        assert status == 403 and body["code"] == "AUTH_FORBIDDEN", (route.name, status, body)


async def test_listings_show_a_customer_only_its_own_tenant(world: World) -> None:
    mine = await (await world.client.get("/api/v1/worksets", headers=world.key(world.a))).json()
    assert mine["items"] and {w["tenant"] for w in mine["items"]} == {world.a.id}
    everyone = await (await world.client.get("/api/v1/worksets?limit=1", headers=world.operator)).json()
    assert len(everyone["items"]) == 1 and everyone["next_cursor"]
    seen = [everyone["items"][0]["id"]]
    cursor = everyone["next_cursor"]
    while cursor:
        page = await (await world.client.get("/api/v1/worksets", params={"limit": "1", "cursor": cursor},
                                             headers=world.operator)).json()
        seen += [w["id"] for w in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 4  # two per tenant, each once, across keyset pages
    customers = await (await world.client.get("/api/v1/customers", headers=world.key(world.a))).json()
    assert [c["customer_id"] for c in customers["items"]] == [world.a.id]
    dead = await (await world.client.get("/api/v1/dlq", headers=world.operator)).json()
    assert {d["workset_id"] for d in dead["items"]} == {world.a.target.dead_letter_id, world.b.target.dead_letter_id}
