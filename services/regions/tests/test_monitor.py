"""The health monitor against real servers: real probes (PostgreSQL, NATS, S3 on moto, a local cluster),
hysteresis over real outages, what it writes (health, history, the event in the outbox), and an
operator's forced failover and fail-back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.regions.monitor import HealthMonitor, ProbeSet
from stamen.domain.regions import HealthPolicy, RegionStatus
from stamen.regions.commands import (
    NothingToFailBack,
    RegionAlreadyForced,
    RegionNotFound,
    fail_back,
    force_failover,
)
from stamen.regions.registry import PostgresUrl, RegionRegistry, RegionSpec
from stamen.settings import Settings
from stamen.stack.servers import NatsServer
from stamen.store.clusters import ClusterRecord
from stamen.store.unit_of_work import UnitOfWork
from tests.intake.s3kit import S3Lab

POLICY = HealthPolicy(fail_after=2, recover_after=2)


def registry(database_url: str, west_nats: str, east_nats: str, s3: S3Lab, bucket: str) -> RegionRegistry:
    host, port = PostgresUrl.parse(database_url).hosts[0]
    return RegionRegistry((
        RegionSpec.model_validate({
            "name": "us-west-2", "primary": True,
            "s3": {"endpoint_url": s3.url, "control_bucket": bucket},
            "nats": {"servers": [west_nats]}, "postgres": {"host": host, "port": port},
        }),
        RegionSpec.model_validate({"name": "us-east-1", "nats": {"servers": [east_nats]}}),
    ))  # fmt: skip


@pytest.fixture
def east_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "east").start()
    server.preferred_port = server.port  # restarts keep the address the registry names
    yield server
    server.stop()


async def test_real_outages_move_the_status_with_hysteresis_and_are_recorded(
    pool: asyncpg.Pool, database_url: str, nats_url: str, east_nats: NatsServer, s3lab: S3Lab, tmp_path: Path
) -> None:
    async with UnitOfWork(pool) as uow:
        await uow.clusters.upsert_cluster(
            ClusterRecord("west-local", "us-west-2", "local", 2, config={"workdir_root": str(tmp_path / "w")})
        )
        await uow.commit()
    settings = Settings(nats_url=nats_url, database_url=database_url)
    probes = ProbeSet(registry(database_url, nats_url, east_nats.url, s3lab, s3lab.bucket), settings, 1.0)
    monitor = HealthMonitor(pool, probes, POLICY, interval=0.1, timeout=1.0)
    try:
        first = await monitor.round()
        west = first["us-west-2"]
        assert [(p.kind.value, p.ok) for p in west.results] == [
            ("s3", True),
            ("nats", True),
            ("postgres", True),
            ("cluster", True),
        ]
        assert west.results[2].facts["role"] == "primary" and west.latency.average_ms is not None

        # A flapping probe (east's NATS stopped every other round) never moves the status.
        for _ in range(3):
            east_nats.stop()
            assert (await monitor.round())["us-east-1"].verdict.status is RegionStatus.DOWN
            east_nats.start()
            assert (await monitor.round())["us-east-1"].status is RegionStatus.HEALTHY
        async with UnitOfWork(pool) as uow:
            assert await uow.regions.history() == []

        # A real outage: down after exactly two failing rounds, with the reason, a history row and an event.
        east_nats.stop()
        assert (await monitor.round())["us-east-1"].status is RegionStatus.HEALTHY
        assert (await monitor.round())["us-east-1"].status is RegionStatus.DOWN
        async with UnitOfWork(pool) as uow:
            health = (await uow.regions.health())["us-east-1"]
            [change] = await uow.regions.history("us-east-1")
            down = await uow.regions.down_since()
        assert health.status is RegionStatus.DOWN and "2 consecutive rounds down" in health.reason
        assert "nats" in health.reason and health.verdict is RegionStatus.DOWN
        assert (change.from_status, change.to_status, change.actor) == ("healthy", "down", "regions")
        assert set(down) == {"us-east-1"}
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT subject, body FROM outbox WHERE event_id = $1", change.event_id)
        assert row is not None and row["subject"] == "stamen.evt._platform.region.health_changed"
        event = json.loads(bytes(row["body"]))
        assert (event["region"], event["payload"]["status"], event["payload"]["previous"]) == (
            "us-east-1",
            "down",
            "healthy",
        )

        # Back after two good rounds.
        east_nats.start()
        assert (await monitor.round())["us-east-1"].status is RegionStatus.DOWN
        assert (await monitor.round())["us-east-1"].status is RegionStatus.HEALTHY
        async with UnitOfWork(pool) as uow:
            assert [h.to_status for h in await uow.regions.history("us-east-1")] == ["healthy", "down"]
            west_row = (await uow.regions.health())["us-west-2"]
        assert west_row.status is RegionStatus.HEALTHY and west_row.latency_p95_ms is not None
        assert {p["kind"] for p in west_row.probes} == {"s3", "nats", "postgres", "cluster"}
    finally:
        await probes.close()


async def test_failing_probes_say_why(
    pool: asyncpg.Pool, database_url: str, nats_url: str, s3lab: S3Lab, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    async with UnitOfWork(pool) as uow:
        await uow.clusters.upsert_cluster(
            ClusterRecord(
                "west-local", "us-west-2", "local", 2, config={"workdir_root": str(tmp_path / "a-file" / "w")}
            )
        )
        await uow.commit()
    settings = Settings(nats_url=nats_url, database_url=database_url.replace("/t_", "/missing_"))
    reg = registry(database_url, "nats://127.0.0.1:1", "nats://127.0.0.1:1", s3lab, "no-such-bucket")
    probes = ProbeSet(reg, settings, 1.0)
    try:
        west = (await HealthMonitor(pool, probes, POLICY, interval=1, timeout=1.0).round())["us-west-2"]
    finally:
        await probes.close()
    details = {p.kind.value: p.detail for p in west.results}
    assert not any(p.ok for p in west.results)
    assert "404" in details["s3"] or "Not Found" in details["s3"]
    assert "does not exist" in details["postgres"]
    assert details["nats"] and "NotADirectoryError" in details["cluster"]
    assert west.verdict.status is RegionStatus.DOWN


async def test_forced_failover_holds_until_fail_back(
    pool: asyncpg.Pool, database_url: str, nats_url: str, east_nats: NatsServer, s3lab: S3Lab
) -> None:
    settings = Settings(nats_url=nats_url, database_url=database_url)
    probes = ProbeSet(registry(database_url, nats_url, east_nats.url, s3lab, s3lab.bucket), settings, 1.0)
    monitor = HealthMonitor(pool, probes, POLICY, interval=1, timeout=1.0)
    try:
        await monitor.round()
        with pytest.raises(RegionNotFound, match="known regions: us-east-1, us-west-2"):
            await force_failover(pool, "eu-west-1", actor="operator:ann", reason="drill")
        with pytest.raises(NothingToFailBack):
            await fail_back(pool, "us-east-1", actor="operator:ann", reason="nothing to undo")
        done = await force_failover(pool, "us-east-1", actor="operator:ann", reason="network maintenance")
        assert (done.previous, done.status) == ("healthy", "down")
        with pytest.raises(RegionAlreadyForced, match="operator:ann"):
            await force_failover(pool, "us-east-1", actor="operator:bob", reason="again")
        for _ in range(3):  # the probes say healthy; the override stands
            assert (await monitor.round())["us-east-1"].status is RegionStatus.HEALTHY
        async with UnitOfWork(pool) as uow:
            assert (await uow.regions.health())["us-east-1"].status is RegionStatus.DOWN
        back = await fail_back(pool, "us-east-1", actor="operator:ann", reason="maintenance over")
        assert back.status == "down"  # the regions service moves it at its next round
        await monitor.round()
        async with UnitOfWork(pool) as uow:
            changes = await uow.regions.history("us-east-1")
            ops = await uow.regions.operations("us-east-1")
        assert [(c.to_status, c.actor) for c in changes] == [("healthy", "regions"), ("down", "operator:ann")]
        assert changes[0].reason.startswith("fail-back: the probes say healthy")
        assert [(o.kind, o.actor, o.reason) for o in ops] == [
            ("failback", "operator:ann", "maintenance over"),
            ("failover", "operator:ann", "network maintenance"),
        ]
    finally:
        await probes.close()
