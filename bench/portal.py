"""Portal pages at scale: 100,000 worksets in one tenant, measured as that tenant's signed-in user sees them.

    python bench/portal.py [--worksets 100000] [--requests 200] [--json]

Starts PostgreSQL and NATS from their wheels (or uses DATABASE_URL / NATS_URL) and moto (S3 and Cognito),
onboards one customer, seeds its
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
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from admission import drop_database, fresh_database
from aiohttp.test_utils import TestServer
from measure import bench_process, embedded_servers, emit, latency_summary, machine, transactions

from services.portal.app import init_app
from services.portal.settings import PortalSettings
from services.portal.web.views.dashboard import AGGREGATES
from stamen.auth import AuthSettings, cognito
from stamen.customers import AsyncCustomerManager
from stamen.customers.settings import CustomerSettings
from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings
from stamen.stack.servers import MotoServer

TENANT = "bench-lab"
OTHER = "other-lab"
PASSWORD = "Bench-Pass-12345!"
# Finished worksets pile up; the active ones are bounded by the clusters' slots and the retry timers.
STATES = [
    ("completed", 75),
    ("failed", 4),
    ("cancelled", 7),
    ("archived", 10),
    ("dead_lettered", 1),
    ("rejected", 1),
    ("queued", 2),
]
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
        spec = {
            "name": name,
            "tenant": tenant,
            "pipeline": rng.choice(["germline", "wes", "rna-seq", "fastq-qc"]),
            "samples": [
                {"id": f"U{i}-L{j}", "sample_id": f"NA{10000 + i}", "platform": "ILMN"} for j in (1, 2)
            ],
        }
        path = PATHS.get(state, ["submitted", "validating", "queued", state])
        worksets.append(
            (
                workset_id,
                tenant,
                name,
                state,
                len(path),
                "us-west-2",
                rng.choice(["normal", "urgent", "low"]),
                json.dumps(spec),
                uuid.uuid4(),
                created,
                created + timedelta(minutes=30),
                created if state == "queued" else None,
                "local" if state in ("running", "completed") else None,
            )
        )
        previous = None
        for v, to in enumerate(path, start=1):
            history.append(
                (
                    workset_id,
                    v,
                    previous,
                    to,
                    "bench",
                    f"{previous or 'new'} to {to}",
                    created + timedelta(minutes=v),
                )
            )
            previous = to
        if state == "completed":
            cpu = rng.uniform(100, 20000)
            ended = created + timedelta(minutes=30)
            actuals.append(
                (workset_id, 1, 4, cpu, cpu / 3600, cpu * 1.1, 2048.0, cpu / 3600 * 0.04, 1800.0, ended)
            )
            for k, step in enumerate(("stage", "align", "call", "export")):
                steps.append(
                    (
                        workset_id,
                        1,
                        step,
                        k,
                        "local",
                        "succeeded",
                        json.dumps({"cpu_seconds": cpu / 4}),
                        created + timedelta(minutes=5 * k),
                        created + timedelta(minutes=5 * k + 4),
                    )
                )
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "worksets",
            records=worksets,
            columns=[
                "id",
                "tenant_id",
                "name",
                "state",
                "version",
                "region",
                "priority",
                "spec",
                "correlation_id",
                "created_at",
                "updated_at",
                "queued_at",
                "cluster",
            ],
        )
        await conn.copy_records_to_table(
            "workset_history",
            records=history,
            columns=["workset_id", "version", "from_state", "to_state", "actor", "reason", "at"],
        )
        await conn.copy_records_to_table(
            "workset_actuals",
            records=actuals,
            columns=[
                "workset_id",
                "attempts",
                "step_runs",
                "cpu_seconds",
                "vcpu_hours",
                "elapsed_seconds",
                "max_rss_mb",
                "cost_usd",
                "wall_seconds",
                "recorded_at",
            ],
        )
        await conn.copy_records_to_table(
            "step_runs",
            records=steps,
            columns=[
                "workset_id",
                "attempt",
                "step",
                "step_index",
                "cluster",
                "state",
                "resources",
                "started_at",
                "ended_at",
            ],
        )
    return ids


async def measure(
    name: str, n: int, call: Callable[[], Awaitable[int]], conn: asyncpg.Connection, figures: dict[str, Any]
) -> str:
    for _ in range(min(5, n)):  # warm caches (JWKS, the tenant resolver, plans)
        await call()
    before = await transactions(conn)
    cpu0 = time.process_time()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status = await call()
        times.append(time.perf_counter() - t0)
        assert status == 200, f"{name}: HTTP {status}"
    cpu = (time.process_time() - cpu0) * 1000 / n
    xacts = (await transactions(conn) - before) / n
    summary = latency_summary(times)
    figures[name] = {
        **summary,
        "transactions_per_request": round(xacts, 2),
        "cpu_ms_per_request": round(cpu, 2),
    }
    return (
        f"{name:<22} p50 {summary['p50_ms']:7.1f} ms   p99 {summary['p99_ms']:7.1f} ms   "
        f"{xacts:5.1f} xacts/request   {cpu:6.1f} CPU ms/request   "
        f"{'ok' if summary['p99_ms'] < 150 else 'OVER 150 ms'}"
    )


async def run(n: int, requests: int, folder: Path, as_json: bool) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    moto = MotoServer(folder / "moto").start()
    try:
        with embedded_servers(folder) as servers:
            url = await fresh_database(servers.database_url)
            try:
                assert servers.nats_url is not None
                await measure_pages(n, requests, url, servers.nats_url, moto.url, as_json)
            finally:
                await drop_database(servers.database_url, url)
    finally:
        moto.stop()


async def measure_pages(
    n: int, requests: int, database_url: str, nats_url: str, aws: str, as_json: bool
) -> None:
    conn = await asyncpg.connect(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    customers = CustomerSettings(
        region="us-west-2",
        aws_endpoint_url=aws,
        database_url=database_url,
        cognito_user_pool_name=f"bench-{uuid.uuid4().hex[:6]}",
        cognito_create_pool=True,
    )
    manager = AsyncCustomerManager(pool, customers)
    # The other tenant's worksets only need to be there (rows to skip); it needs no AWS resources.
    await manager.onboard_customer(customer_name=TENANT, email=f"admin@{TENANT}.example", customer_id=TENANT)
    async with cognito.cognito_client("us-west-2", aws) as client:
        user_pool = await cognito.ensure_user_pool(client, name=customers.cognito_user_pool_name, create=True)
        await cognito.register(
            client,
            app_client_id=user_pool.app_client_id,
            email="user@bench.example",
            password=PASSWORD,
            customer_id=TENANT,
        )
        await cognito.admin_confirm(
            client, user_pool_id=user_pool.user_pool_id, username="user@bench.example"
        )
    await conn.execute(
        "INSERT INTO clusters (name, region, executor, max_concurrent) VALUES ('local', 'us-west-2', 'local', 8)"
    )
    rng = random.Random(12)
    t0 = time.perf_counter()
    ids = await seed(pool, TENANT, n, rng)
    await seed(pool, OTHER, max(n // 10, 50), rng)
    await conn.execute("VACUUM ANALYZE")
    seeded = time.perf_counter() - t0
    lines = [f"seeded {n:,} worksets in {TENANT} (+{max(n // 10, 50):,} in {OTHER}) in {seeded:.1f}s"]
    figures: dict[str, Any] = {
        "bench": "portal",
        "machine": machine(),
        "worksets": n,
        "requests": requests,
        "seed_seconds": round(seeded, 1),
        "pages": {},
    }

    settings = Settings(
        DATABASE_URL=database_url, NATS_URL=nats_url, AWS_ENDPOINT_URL=aws, region="us-west-2"
    )
    auth = AuthSettings(
        region="us-west-2",
        aws_endpoint_url=aws,
        cognito_user_pool_id=user_pool.user_pool_id,
        cognito_app_client_ids=user_pool.app_client_id,
        api_key_pepper="bench",
    )
    app = init_app(
        settings,
        intake=IntakeSettings(seed_demo_data="false"),
        auth=auth,
        customers=customers,
        portal=PortalSettings(portal_secret="bench-secret"),
    )
    server = TestServer(app)
    await server.start_server()
    async with aiohttp.ClientSession(
        base_url=str(server.make_url("")), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as s:
        async with s.get("/signin") as r:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        async with s.post(
            "/signin",
            data={"csrf_token": token, "email": "user@bench.example", "password": PASSWORD, "next": "/"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303, await r.text()

        async def get(path: str) -> int:
            async with s.get(path) as r:
                await r.read()
                return r.status

        deepest = min(50, max(1, n // 50))  # page 50, or the last full page of a small run
        page = "/worksets"
        for _ in range(deepest - 1):  # follow the keyset cursors
            async with s.get(page) as r:
                found = re.search(r'href="(/worksets\?[^"]+)" rel="next"', await r.text())
                assert found, "ran out of pages"
                page = found.group(1).replace("&amp;", "&")

        async def cold() -> int:  # the charts and month totals recomputed on every request
            app[AGGREGATES].clear()
            return await get("/")

        pages = figures["pages"]
        lines.append(await measure("dashboard", requests, lambda: get("/"), conn, pages))
        lines.append(await measure("dashboard, charts cold", max(3, requests // 5), cold, conn, pages))
        lines.append(await measure("worksets, page 1", requests, lambda: get("/worksets"), conn, pages))
        lines.append(await measure(f"worksets, page {deepest}", requests, lambda: get(page), conn, pages))
        lines.append(
            await measure("worksets, search", requests, lambda: get("/worksets?q=na10042"), conn, pages)
        )
        lines.append(
            await measure(
                "workset detail", requests, lambda: get(f"/worksets/{rng.choice(ids)}"), conn, pages
            )
        )
    await server.close()
    await pool.close()
    await conn.close()
    emit(figures, lines, as_json)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worksets", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    with tempfile.TemporaryDirectory(prefix="stamen-bench-portal-") as folder:
        asyncio.run(run(args.worksets, args.requests, Path(folder), args.json))


if __name__ == "__main__":
    main()
