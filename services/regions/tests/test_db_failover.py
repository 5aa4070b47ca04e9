"""The database failover coordinator on a real PostgreSQL primary/standby pair (pgserver's binaries) and a
real JetStream key-value store: a planned switchover (forced failover of the primary's region) loses
nothing, an old primary that accepts writes again is fenced, a rewound node rejoins as a standby and
synchronous replication follows it, and an operator's switchover request moves the primary back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import nats
import pytest

from services.regions.failover import DatabaseFailover, DatabaseNode, Operation
from services.regions.probes import PostgresProbe, run_probe
from stamen.domain.regions import ProbeResult, RegionStatus
from stamen.regions.leader import LeaderStore
from stamen.stack.replication import PostgresNode, start_under_leader
from stamen.store.regions import RegionOperationRow

WEST, EAST = "us-west-2", "us-east-1"
UP = {WEST: RegionStatus.HEALTHY, EAST: RegionStatus.HEALTHY}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, PostgresNode]]:
    west = PostgresNode(tmp_path / "west", name=WEST).start()
    east = PostgresNode(tmp_path / "east", name=EAST).clone_from("127.0.0.1", west.port)
    yield {WEST: west, EAST: east}
    for node in (west, east):
        node.stop()


async def sql(node: PostgresNode, query: str) -> object:
    conn = await asyncpg.connect(node.dsn())
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def probe(nodes: dict[str, PostgresNode]) -> dict[str, ProbeResult]:
    results = {}
    for region, node in nodes.items():
        p = PostgresProbe(node.dsn(), f"127.0.0.1:{node.port}", 5.0)
        results[region] = await run_probe(p, 5.0)
        await p.close()
    return results


def kinds(ops: list[Operation]) -> list[tuple[str, str]]:
    return [(o.kind, o.region) for o in ops]


async def test_switchover_fencing_rejoin_and_switch_back(
    pair: dict[str, PostgresNode], nats_url: str
) -> None:
    west, east = pair[WEST], pair[EAST]
    nc = await nats.connect(nats_url)
    store = await LeaderStore.open(nc.jetstream())

    async def open_store() -> LeaderStore:
        return store

    nodes = {r: DatabaseNode(r, "127.0.0.1", n.port, n.dsn()) for r, n in pair.items()}
    coordinator = DatabaseFailover(nodes, open_store, synchronous=True, actor="regions", timeout=5.0)
    try:
        # First round: the running primary becomes the leader; its streaming standby makes it synchronous.
        ops = await coordinator.after_round(UP, await probe(pair), set())
        assert kinds(ops) == [("database_promotion", WEST), ("database_sync", WEST)]
        assert ops[0].detail["bootstrap"] is True
        assert await sql(west, "SHOW synchronous_standby_names") == "*"
        await sql(west, "CREATE TABLE acknowledged AS SELECT 1 AS x")  # committed only once east has it

        # An operator fails the primary's region over: planned switchover, fenced first, nothing lost.
        ops = await coordinator.after_round(
            {WEST: RegionStatus.DOWN, EAST: RegionStatus.HEALTHY}, await probe(pair), {WEST}
        )
        assert kinds(ops) == [("database_fencing", WEST), ("database_promotion", EAST)]
        assert (
            ops[1].detail["planned"] is True
            and ops[1].detail["caught_up"] is True
            and ops[1].detail["term"] == 2
        )
        assert await sql(east, "SELECT pg_is_in_recovery()") is False
        assert await sql(east, "SELECT count(*) FROM acknowledged") == 1
        assert await sql(east, "SHOW synchronous_standby_names") == ""  # no standby yet: asynchronous
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await sql(west, "INSERT INTO acknowledged VALUES (2)")
        leader = await store.get()
        assert leader is not None and (leader.leader.node, leader.leader.term) == (EAST, 2)

        # Someone lifts the fence by hand: the node accepts writes but is not the leader: fenced again.
        await sql(west, "ALTER SYSTEM RESET default_transaction_read_only")
        await sql(west, "SELECT pg_reload_conf()")
        ops = await coordinator.after_round(UP, await probe(pair), set())
        assert (
            kinds(ops) == [("database_fencing", WEST)]
            and "the primary is us-east-1 (term 2)" in ops[0].reason
        )
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await sql(west, "INSERT INTO acknowledged VALUES (3)")

        # Its node agent rejoins it as the leader record says: rewound, a standby; commits wait for it again.
        assert await start_under_leader(west, store) == "standby"
        assert await sql(west, "SELECT pg_is_in_recovery()") is True
        deadline = time.monotonic() + 30
        while await sql(east, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") != 1:
            assert time.monotonic() < deadline, "the rejoined node never streamed"
            await asyncio.sleep(0.1)
        results = await probe(pair)
        assert results[WEST].facts["role"] == "standby"
        ops = await coordinator.after_round(UP, results, set())
        assert kinds(ops) == [("database_sync", EAST)]
        assert await sql(east, "SHOW synchronous_standby_names") == "*"

        # Fail-back --database: the operator's request moves the primary back to us-west-2.
        request = RegionOperationRow(7, WEST, "database_switchover", "operator:ann", "failback", "requested",
                                     {"to_region": WEST}, datetime.now(UTC))  # fmt: skip
        ops = await coordinator.after_round(UP, await probe(pair), set(), [request])
        assert kinds(ops) == [
            ("database_fencing", EAST),
            ("database_promotion", WEST),
            ("database_switchover", WEST),
        ]
        assert (ops[2].request_id, ops[2].outcome) == (7, "done")
        assert await sql(west, "SELECT pg_is_in_recovery()") is False
        assert (
            await sql(west, "SHOW default_transaction_read_only") == "off"
        )  # its old fence did not follow it
        leader = await store.get()
        assert leader is not None and (leader.leader.node, leader.leader.term) == (WEST, 3)
    finally:
        await nc.close()
