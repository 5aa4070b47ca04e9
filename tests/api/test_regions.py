"""Region routes: health for every caller (reasons for operators only), one region's probes and history,
and the operator's forced failover and fail-back with their audit trail and stable error codes."""

from __future__ import annotations

from datetime import UTC, datetime

from stamen.domain.regions import RegionStatus
from stamen.store.regions import RegionRecord
from stamen.store.unit_of_work import UnitOfWork
from tests.api.conftest import World


async def _registry(world: World) -> None:
    async with UnitOfWork(world.pool) as uow:
        await uow.regions.sync_registry([
            RegionRecord("us-west-2", True, "http://s3.internal", "ctl-usw2", ("nats://n1:4222",), "db1:5432"),
            RegionRecord("us-east-1", False, None, None, ("nats://n2:4222",), "db2:5432"),
        ])  # fmt: skip
        await uow.regions.save_probe_round(
            "us-east-1", verdict=RegionStatus.DOWN, verdict_reason="postgres db2:5432: refused",
            latency=(12.5, 11.0, 20.0, 20.0), probes=[
                {"kind": "postgres", "target": "db2:5432", "ok": False, "latency_ms": None, "detail": "refused"},
                {"kind": "nats", "target": "nats://n2:4222", "ok": True, "latency_ms": 12.5, "detail": "", "server": "n2"},
            ], probed_at=datetime.now(UTC),
        )  # fmt: skip
        await uow.regions.change_status(
            "us-east-1", previous=RegionStatus.HEALTHY, status=RegionStatus.DOWN, reason="3 consecutive rounds down",
            actor="regions", at=datetime.now(UTC), latency_ms=12.5,
        )  # fmt: skip
        await uow.commit()


async def test_every_caller_sees_health_and_latency_but_only_operators_see_why(world: World) -> None:
    await _registry(world)
    customer = await (await world.client.get("/api/v1/regions", headers=world.key(world.a))).json()
    east = next(r for r in customer["items"] if r["region"] == "us-east-1")
    assert (east["health"], east["health_reported"], east["reason"]) == ("down", True, None)
    assert east["latency_ms"] == {"average": 12.5, "p50": 11.0, "p95": 20.0, "p99": 20.0}
    west = next(r for r in customer["items"] if r["region"] == "us-west-2")
    assert (west["primary"], west["configured"], west["health"], west["health_reported"]) == (
        True,
        True,
        "healthy",
        False,
    )
    operator = await (await world.client.get("/api/v1/regions", headers=world.operator)).json()
    assert (
        next(r for r in operator["items"] if r["region"] == "us-east-1")["reason"]
        == "3 consecutive rounds down"
    )

    detail = await world.client.get("/api/v1/regions/us-east-1", headers=world.operator)
    assert detail.status == 200
    body = await detail.json()
    assert [(p["kind"], p["ok"]) for p in body["probes"]] == [("postgres", False), ("nats", True)]
    assert body["probes"][1]["facts"] == {"server": "n2"}
    assert body["endpoints"]["postgres"] == "db2:5432" and body["history"][0]["to_status"] == "down"
    for path in ("/api/v1/regions/us-east-1", "/api/v1/regions/us-east-1/history"):
        refused = await world.client.get(path, headers=world.key(world.a))
        assert refused.status == 403, path
    missing = await world.client.get("/api/v1/regions/ap-south-1", headers=world.operator)
    assert (missing.status, (await missing.json())["code"]) == (404, "REGION_NOT_FOUND")


async def test_forced_failover_and_fail_back_are_audited(world: World) -> None:
    await _registry(world)
    url = "/api/v1/regions/us-west-2"
    refused = await world.client.post(f"{url}/failover", json={"reason": "drill"}, headers=world.key(world.a))
    assert refused.status == 403
    empty = await world.client.post(f"{url}/failover", json={"reason": ""}, headers=world.operator)
    assert (empty.status, (await empty.json())["code"]) == (400, "REQUEST_INVALID")
    done = await world.client.post(f"{url}/failover", json={"reason": "drill"}, headers=world.operator)
    assert done.status == 200
    assert {k: v for k, v in (await done.json()).items() if k != "operation_id"} == {
        "region": "us-west-2", "previous": "healthy", "status": "down",
        "forced_by": (await done.json())["forced_by"], "switchover_requested": False,
    }  # fmt: skip
    again = await world.client.post(f"{url}/failover", json={"reason": "drill"}, headers=world.operator)
    assert (again.status, (await again.json())["code"]) == (409, "REGION_ALREADY_FAILED_OVER")
    back = await world.client.post(
        f"{url}/failback", json={"reason": "drill over", "database": True}, headers=world.operator
    )
    assert back.status == 200 and (await back.json())["switchover_requested"] is True
    nothing = await world.client.post(f"{url}/failback", json={"reason": "again"}, headers=world.operator)
    assert (nothing.status, (await nothing.json())["code"]) == (409, "REGION_NOTHING_TO_FAIL_BACK")
    history = await (await world.client.get(f"{url}/history?limit=10", headers=world.operator)).json()
    assert [c["to_status"] for c in history["changes"]] == ["down"]
    assert [(o["kind"], o["outcome"]) for o in history["operations"]] == [
        ("database_switchover", "requested"),
        ("failback", "done"),
        ("failover", "done"),
    ]
    assert all(o["actor"].startswith("cognito") or ":" in o["actor"] for o in history["operations"])
