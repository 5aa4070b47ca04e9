"""Portal pages at scale: 100,000 worksets in one tenant, measured as that tenant's signed-in user sees them.

    python bench/portal.py [--worksets 100000] [--requests 200]

Starts PostgreSQL, NATS and moto (S3 and Cognito) from their wheels, onboards one customer, seeds its
worksets with history, actuals and step runs (COPY, plus 10% as many for a second tenant), runs the portal
in this process with authentication on, signs in through the sign-in form, then times each page with
sequential requests: the dashboard, the worksets list (first page, and the 50th page reached through the
keyset cursors), a search by sample id, and the detail page of random worksets. Prints p50/p99 per page
(target: p99 under 150 ms) and the PostgreSQL transactions and CPU milliseconds per request (portal and
client share this process). The dashboard's charts and month totals are reused for a minute
(STAMEN_PORTAL_CHART_CACHE_SECONDS); "dashboard, charts cold" recomputes them on every request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from services.portal.app import init_app
from services.portal.settings import PortalSettings
from services.portal.web.views.dashboard import AGGREGATES, AggregateCache
from stamen.auth import AuthSettings, cognito
from stamen.customers import AsyncCustomerManager
from stamen.customers.settings import CustomerSettings
from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings
from stamen.stack.servers import MotoServer, NatsServer, PostgresServer
from stamen.store.migrate import apply_migrations

TENANT = "bench-lab"
OTHER = "other-lab"
PASSWORD = "Bench-Pass-12345!"
# Finished worksets pile up; the active ones are bounded by the clusters' slots and the retry timers.
STATES = [("completed", 75), ("failed", 4), ("cancelled", 7), ("archived", 10), ("dead_lettered", 1),
          ("rejected", 1), ("queued", 2)]
ACTIVE = {"running": 20, "scheduled": 5, "retry_wait": 10}
PATHS = {"completed": ["submitted", "validating", "queued", "scheduled", "running", "completed"]}


def states(n: int, rng: random.Random) -> list[str]:
    active = [state for state, count in ACTIVE.items() for _ in range(count)]
    names = [s for s, _ in STATES]
    weights = [w for _, w in STATES]
    return active + rng.choices(names, weights, k=n - len(active))


async def seed(pool: asyncpg.Pool, tenant: str, n: int, rng: random.Random) -> list[str]:
    now = datetime.now(UTC)
    ids, worksets, history, actuals, steps = [], [], [], [], []
    for i, state in enumerate(states(n, rng)):
        workset_id = f"ws-{uuid.uuid4().hex[:16]}"
        ids.append(workset_id)
        created = now - timedelta(seconds=rng.uniform(0, 60 * 86400))
        name = f"{tenant}-run-{i:06d}"
        spec = {"name": name, "tenant": tenant, "pipeline": rng.choice(["germline", "wes", "rna-seq", "fastq-qc"]),
                "samples": [{"id": f"U{i}-L{j}", "sample_id": f"NA{10000 + i}", "platform": "ILMN"} for j in (1, 2)]}
        path = PATHS.get(state, ["submitted", "validating", "queued", state])
        worksets.append((workset_id, tenant, name, state, len(path), "us-west-2", rng.choice(["normal", "urgent", "low"]),
                         json.dumps(spec), uuid.uuid4(), created, created + timedelta(minutes=30),
                         created if state == "queued" else None, "local" if state in ("running", "completed") else None))
        previous = None
        for v, to in enumerate(path, start=1):
            history.append((workset_id, v, previous, to, "bench", f"{previous or 'new'} to {to}", created + timedelta(minutes=v)))
            previous = to
        if state == "completed":
            cpu = rng.uniform(100, 20000)
            ended = created + timedelta(minutes=30)
            actuals.append((workset_id, 1, 4, cpu, cpu / 3600, cpu * 1.1, 2048.0, cpu / 3600 * 0.04, 1800.0, ended))
            for k, step in enumerate(("stage", "align", "call", "export")):
                steps.append((workset_id, 1, step, k, "local", "succeeded", json.dumps({"cpu_seconds": cpu / 4}),
                              created + timedelta(minutes=5 * k), created + timedelta(minutes=5 * k + 4)))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("worksets", records=worksets, columns=[
            "id", "tenant_id", "name", "state", "version", "region", "priority", "spec", "correlation_id",
            "created_at", "updated_at", "queued_at", "cluster"])
        await conn.copy_records_to_table("workset_history", records=history, columns=[
            "workset_id", "version", "from_state", "to_state", "actor", "reason", "at"])
        await conn.copy_records_to_table("workset_actuals", records=actuals, columns=[
            "workset_id", "attempts", "step_runs", "cpu_seconds", "vcpu_hours", "elapsed_seconds", "max_rss_mb",
            "cost_usd", "wall_seconds", "recorded_at"])
        await conn.copy_records_to_table("step_runs", records=steps, columns=[
            "workset_id", "attempt", "step", "step_index", "cluster", "state", "resources", "started_at", "ended_at"])
    return ids


async def measure(name: str, n: int, call: Callable[[], Awaitable[int]], conn: asyncpg.Connection) -> None:
    for _ in range(5):  # warm caches (JWKS, the tenant resolver, plans)
        await call()
    before = await statements(conn)
    cpu0 = time.process_time()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status = await call()
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200, f"{name}: HTTP {status}"
    cpu = (time.process_time() - cpu0) * 1000 / n
    sql = (await statements(conn) - before) / n
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name:<22} p50 {statistics.median(times):7.1f} ms   p99 {p99:7.1f} ms   "
          f"{sql:5.1f} xacts/request   {cpu:6.1f} CPU ms/request   {'ok' if p99 < 150 else 'OVER 150 ms'}")


async def statements(conn: asyncpg.Connection) -> int:
    """Statements PostgreSQL committed or rolled back in the bench database (transactions, as a proxy)."""
    return int(await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"))


async def run(n: int, requests: int, folder: Path) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    pg, nats, moto = (PostgresServer(folder / "pg").start(), NatsServer(folder / "nats").start(),
                      MotoServer(folder / "moto").start())
    try:
        conn = await asyncpg.connect(pg.url)
        await apply_migrations(conn)
        pool = await asyncpg.create_pool(pg.url, min_size=1, max_size=4)
        assert pool is not None
        customers = CustomerSettings(region="us-west-2", aws_endpoint_url=moto.url, database_url=pg.url,
                                     cognito_user_pool_name="bench", cognito_create_pool=True)
        manager = AsyncCustomerManager(pool, customers)
        for tenant in (TENANT, OTHER):
            await manager.onboard_customer(customer_name=tenant, email=f"admin@{tenant}.example", customer_id=tenant)
        async with cognito.cognito_client("us-west-2", moto.url) as client:
            user_pool = await cognito.ensure_user_pool(client, name="bench", create=True)
            await cognito.register(client, app_client_id=user_pool.app_client_id, email="user@bench.example",
                                   password=PASSWORD, customer_id=TENANT)
            await cognito.admin_confirm(client, user_pool_id=user_pool.user_pool_id, username="user@bench.example")
        await conn.execute("INSERT INTO clusters (name, region, executor, max_concurrent) VALUES ('local', 'us-west-2', 'local', 8)")
        rng = random.Random(12)
        t0 = time.perf_counter()
        ids = await seed(pool, TENANT, n, rng)
        await seed(pool, OTHER, n // 10, rng)
        await conn.execute("VACUUM ANALYZE")
        print(f"seeded {n:,} worksets in {TENANT} (+{n // 10:,} in {OTHER}) in {time.perf_counter() - t0:.1f}s")

        settings = Settings(DATABASE_URL=pg.url, NATS_URL=nats.url, AWS_ENDPOINT_URL=moto.url, region="us-west-2")
        auth = AuthSettings(region="us-west-2", aws_endpoint_url=moto.url, cognito_user_pool_id=user_pool.user_pool_id,
                            cognito_app_client_ids=user_pool.app_client_id, api_key_pepper="bench")
        app = init_app(settings, intake=IntakeSettings(seed_demo_data="false"), auth=auth, customers=customers,
                       portal=PortalSettings(portal_secret="bench-secret"))
        server = TestServer(app)
        await server.start_server()
        async with aiohttp.ClientSession(base_url=str(server.make_url("")), cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.get("/signin") as r:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
            async with s.post("/signin", data={"csrf_token": token, "email": "user@bench.example",
                                               "password": PASSWORD, "next": "/"}, allow_redirects=False) as r:
                assert r.status == 303, await r.text()

            async def get(path: str) -> int:
                async with s.get(path) as r:
                    await r.read()
                    return r.status

            page = "/worksets"
            for _ in range(49):  # follow the keyset cursors to page 50
                async with s.get(page) as r:
                    found = re.search(r'href="(/worksets\?[^"]+)" rel="next"', await r.text())
                    assert found, "ran out of pages before page 50"
                    page = found.group(1).replace("&amp;", "&")
            assert "page=50" in page
            await measure("dashboard", requests, lambda: get("/"), conn)

            async def cold() -> int:  # the charts and month totals recomputed on every request
                app[AGGREGATES] = AggregateCache()
                return await get("/")

            await measure("dashboard, charts cold", max(20, requests // 5), cold, conn)
            await measure("worksets, page 1", requests, lambda: get("/worksets"), conn)
            await measure("worksets, page 50", requests, lambda: get(page), conn)
            await measure("worksets, search", requests, lambda: get("/worksets?q=na10042"), conn)
            await measure("workset detail", requests, lambda: get(f"/worksets/{rng.choice(ids)}"), conn)
        await server.close()
        await pool.close()
        await conn.close()
    finally:
        for server_ in (moto, nats, pg):
            server_.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worksets", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stamen-bench-portal-") as folder:
        asyncio.run(run(args.worksets, args.requests, Path(folder)))


if __name__ == "__main__":
    main()
