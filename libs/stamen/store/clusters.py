"""The clusters the scheduler places worksets on (the `clusters` table): register, list, drain, remove."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stamen.domain.clusters import ClusterStatus, ExecutorKind
from stamen.store.db import Connection
from stamen.store.errors import StoreError


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    region: str
    executor: ExecutorKind
    max_concurrent: int
    price_factor: float = 1.0
    data_locations: tuple[str, ...] = ()
    status: ClusterStatus = "active"
    config: dict[str, Any] | None = None


class ClusterNotFound(StoreError, LookupError):
    code = "CLUSTER_NOT_FOUND"
    http_status = 404


def no_such_cluster(name: str) -> ClusterNotFound:
    return ClusterNotFound(f"no cluster named {name!r}; see `stamen cluster ls`", cluster=name)


class ClusterBusy(StoreError, RuntimeError):
    code = "CLUSTER_BUSY"
    http_status = 409


def cluster_from_row(r: Any) -> ClusterRecord:
    return ClusterRecord(
        name=r["name"],
        region=r["region"],
        executor=r["executor"],
        max_concurrent=r["max_concurrent"],
        price_factor=r["price_factor"],
        data_locations=tuple(r["data_locations"]),
        status=r["status"],
        config=json.loads(r["config"]),
    )


class ClusterRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def upsert_cluster(self, c: ClusterRecord) -> None:
        await self._conn.execute(
            """INSERT INTO clusters (name, region, executor, max_concurrent, price_factor, data_locations, status, config)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
               ON CONFLICT (name) DO UPDATE SET region = $2, executor = $3, max_concurrent = $4, price_factor = $5,
                   data_locations = $6, status = $7, config = $8::jsonb, updated_at = now()""",
            c.name,
            c.region,
            c.executor,
            c.max_concurrent,
            c.price_factor,
            list(c.data_locations),
            c.status,
            json.dumps(c.config or {}),
        )

    async def clusters(self) -> list[ClusterRecord]:
        return [cluster_from_row(r) for r in await self._conn.fetch("SELECT * FROM clusters ORDER BY name")]

    async def cluster(self, name: str) -> ClusterRecord:
        row = await self._conn.fetchrow("SELECT * FROM clusters WHERE name = $1", name)
        if row is None:
            raise no_such_cluster(name)
        return cluster_from_row(row)

    async def set_cluster_status(self, name: str, status: ClusterStatus) -> None:
        done = await self._conn.execute(
            "UPDATE clusters SET status = $2, updated_at = now() WHERE name = $1", name, status
        )
        if done != "UPDATE 1":
            raise no_such_cluster(name)

    async def remove_cluster(self, name: str) -> None:
        busy = await self._conn.fetchval("SELECT count(*) FROM slot_leases WHERE cluster = $1", name)
        if busy:
            raise ClusterBusy(
                f"cluster {name!r} runs {busy} worksets; drain it and wait for them to finish", cluster=name
            )
        done = await self._conn.execute("DELETE FROM clusters WHERE name = $1", name)
        if done != "DELETE 1":
            raise no_such_cluster(name)
