"""The REST API with many worksets: list and detail latency at 100,000 worksets, idle and under load.

    python bench/api.py [--worksets 100000] [--requests 300] [--concurrency 8] [--json]

Seeds a fresh database with `--worksets` worksets of 200 tenants in every state, each with its history
(five transitions), starts the real portal service (`python -m services.portal`, auth off as in
`stamen up`) and times over HTTP:

- list: `GET /api/v1/worksets` (an operator's first page, all tenants), `?tenant=` and `?state=running`;
- detail: `GET /api/v1/worksets/{id}` of random worksets;

first one request at a time (idle), then `--concurrency` clients at once (under load). The ceiling
printed beside each is the same read done straight through the repository in this process (one
UnitOfWork, no HTTP): the ratio says what the API adds to the database's part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from admission import drop_database, fresh_database
from measure import REPO_ROOT, ProcessMeter, bench_process, embedded_servers, emit, latency_summary, machine

from stamen.stack.ports import free_port
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork

TENANTS = 200
# (state, share of worksets): most are finished, as in any long-running deployment.
STATES_SQL = """(CASE WHEN g % 100 < 70 THEN 'completed' WHEN g % 100 < 80 THEN 'queued'
                      WHEN g % 100 < 85 THEN 'running' WHEN g % 100 < 90 THEN 'failed'
                      WHEN g % 100 < 95 THEN 'cancelled' ELSE 'retry_wait' END)"""
HISTORY = (("submitted", None), ("validating", "submitted"), ("queued", "validating"),
           ("scheduled", "queued"), ("running", "scheduled"))  # fmt: skip


async def seed(url: str, worksets: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id,
                                      created_at, updated_at, attempt, cluster, queued_at)
                SELECT 'ws-' || lpad(g::text, 7, '0'), 't' || lpad((g % {TENANTS})::text, 3, '0'),
                       'sample-batch-' || g, {STATES_SQL}, 'us-west-2', 'normal',
                       jsonb_build_object('name', 'sample-batch-' || g, 'pipeline', 'fastq-qc',
                           'reference_genome', 'GRCh38',
                           'samples', jsonb_build_array(jsonb_build_object('id', 'S' || g, 'platform', 'ILLUMINA',
                               'r1', 's3://lab/reads/S' || g || '_R1.fastq.gz',
                               'r2', 's3://lab/reads/S' || g || '_R2.fastq.gz'))),
                       gen_random_uuid(), now() - interval '30 days' + g * interval '20 seconds',
                       now(), 1, 'local', now() - interval '30 days' + g * interval '20 seconds'
                FROM generate_series(1, $1) g""",
            worksets,
        )
        values = ", ".join(
            f"({i + 1}, {f'{prev!r}' if prev else 'NULL'}, {to!r})" for i, (to, prev) in enumerate(HISTORY)
        )
        await conn.execute(
            f"""INSERT INTO workset_history (workset_id, version, from_state, to_state, actor, reason, at)
                SELECT w.id, h.version, h.from_state, h.to_state, 'bench', 'seeded by bench/api.py',
                       w.created_at + h.version * interval '1 second'
                FROM worksets w CROSS JOIN (VALUES {values}) AS h (version, from_state, to_state)"""
        )
        await conn.execute("VACUUM ANALYZE")  # settled: autovacuum has visited the backlog
    finally:
        await conn.close()


async def start_portal(database_url: str, nats_url: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "STAMEN_HTTP_HOST": "127.0.0.1",
        "STAMEN_HTTP_PORT": str(port),
        "STAMEN_AUTH_ENABLED": "false",
        "STAMEN_STATE_DIR": str(folder / "state"),
        "STAMEN_LOG_LEVEL": "WARNING",
        # The per-principal rate limit (10/s) would measure itself, not the API: every request here is
        # the one local-demo operator.
        "STAMEN_RATE_LIMIT_PER_SECOND": "1000000",
        "STAMEN_RATE_LIMIT_BURST": "1000000",
    }
    log = (folder / "portal.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.portal"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the portal exited: {(folder / 'portal.log').read_text()[-2000:]}")
            try:
                async with session.get(f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        return proc, base
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    proc.kill()
    raise RuntimeError("the portal did not become ready in 60 s")


Request = Callable[[aiohttp.ClientSession], Awaitable[None]]


async def timed(session: aiohttp.ClientSession, requests: list[Request], concurrency: int) -> list[float]:
    times: list[float] = []
    queue = list(requests)

    async def client() -> None:
        while queue:
            request = queue.pop()
            t0 = time.perf_counter()
            await request(session)
            times.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return times


def get(base: str, path: str) -> Request:
    async def request(session: aiohttp.ClientSession) -> None:
        async with session.get(base + path) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body[:300]!r}")

    return request


async def repository_reads(url: str, ids: list[str], n: int) -> dict[str, dict[str, float]]:
    """The same reads straight through the repository: the part the database and the model take."""
    pool = await create_pool(url, max_size=2)
    try:
        lists, details = [], []
        for i in range(n):
            async with UnitOfWork(pool) as uow:
                t0 = time.perf_counter()
                await uow.worksets.page(tenant_id=None, limit=51)
                lists.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await uow.worksets.get(ids[i % len(ids)])
                await uow.worksets.history(ids[i % len(ids)])
                details.append(time.perf_counter() - t0)
        return {"list": latency_summary(lists), "detail": latency_summary(details)}
    finally:
        await pool.close()


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="stamen-bench-") as tmp, embedded_servers(Path(tmp)) as servers:
        folder = Path(tmp)
        assert servers.nats_url is not None
        url = await fresh_database(servers.database_url)
        try:
            t0 = time.perf_counter()
            await seed(url, args.worksets)
            seed_seconds = time.perf_counter() - t0
            portal, base = await start_portal(url, servers.nats_url, folder)
            try:
                ids = [f"ws-{rng.randint(1, args.worksets):07d}" for _ in range(args.requests)]
                kinds: dict[str, list[Request]] = {
                    "list": [get(base, "/api/v1/worksets") for _ in range(args.requests)],
                    "list_tenant": [
                        get(base, f"/api/v1/worksets?tenant=t{rng.randrange(TENANTS):03d}")
                        for _ in range(args.requests)
                    ],
                    "list_running": [
                        get(base, "/api/v1/worksets?state=running") for _ in range(args.requests)
                    ],
                    "detail": [get(base, f"/api/v1/worksets/{i}") for i in ids],
                }
                roots = {"portal": portal.pid, **servers.pids}
                meter = ProcessMeter({k: v for k, v in roots.items() if k != "nats"})
                figures: dict[str, Any] = {"idle": {}, "under_load": {}}
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=60)
                ) as session:
                    await timed(session, kinds["list"][:5], 1)  # warm up
                    meter.start()
                    for name, requests in kinds.items():
                        figures["idle"][name] = latency_summary(await timed(session, requests, 1))
                    idle_cpu = meter.report(per=4 * args.requests)
                    meter.start()
                    for name, requests in kinds.items():
                        figures["under_load"][name] = latency_summary(
                            await timed(session, requests, args.concurrency)
                        )
                    load_cpu = meter.report(per=4 * args.requests)
            finally:
                portal.terminate()
                portal.wait(30)
            direct = await repository_reads(url, ids, args.requests)
        finally:
            await drop_database(servers.database_url, url)
    figures = {
        "bench": "api",
        "machine": machine(),
        "worksets": args.worksets,
        "requests_each": args.requests,
        "concurrency": args.concurrency,
        "seed_seconds": round(seed_seconds, 1),
        **figures,
        "repository_direct": direct,
        "cpu_ms_per_request": {
            "idle": {k: v["cpu_ms_per_unit"] for k, v in idle_cpu.items()},
            "under_load": {k: v["cpu_ms_per_unit"] for k, v in load_cpu.items()},
        },
        "ratio_list_p50_to_repository": round(
            figures["idle"]["list"]["p50_ms"] / direct["list"]["p50_ms"], 1
        ),
        "ratio_detail_p50_to_repository": round(
            figures["idle"]["detail"]["p50_ms"] / direct["detail"]["p50_ms"], 1
        ),
    }
    lines = [f"API at {args.worksets:,} worksets ({TENANTS} tenants), {args.requests} requests of each kind"]
    for mode, label in (("idle", "one at a time"), ("under_load", f"{args.concurrency} at once")):
        lines.append(f"{label}:")
        for name, s in figures[mode].items():
            lines.append(f"  {name:13s} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms")
    lines += [
        f"repository directly: list p50 {direct['list']['p50_ms']:.2f} ms, detail p50 {direct['detail']['p50_ms']:.2f} ms"
        f" (API/repository p50: list {figures['ratio_list_p50_to_repository']}x, "
        f"detail {figures['ratio_detail_p50_to_repository']}x)",
        "CPU ms per request (portal, postgres): idle "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["cpu_ms_per_request"]["idle"].items())
        + "; under load "
        + ", ".join(f"{k} {v:.2f}" for k, v in figures["cpu_ms_per_request"]["under_load"].items()),
    ]
    emit(figures, lines, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worksets", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="timed requests of each kind and mode")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once under load")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
