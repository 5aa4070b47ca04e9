"""Three regions on loopback, from the pip packages' binaries: a three-node NATS JetStream cluster (one
node per region, tagged), a PostgreSQL primary in us-west-2 streaming to a standby in us-east-1, S3 on
moto, one local cluster per region, and the scheduler and regions services as real processes connected
to all of it through NATS_URL (every node) and a multi-host DATABASE_URL (target_session_attrs=read-write).

Used by tests/regions/test_failover.py (a small run) and bench/region_failover.py (500 worksets).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import nats
import psutil
import pytest
import yaml

from services.scheduler.tests.support import enqueue
from stamen.bus.subjects import EVENTS_STREAM
from stamen.regions.leader import LeaderStore
from stamen.regions.registry import PostgresEndpoint, multi_host_dsn
from stamen.stack.ports import free_port
from stamen.stack.replication import LIFECYCLE_TAG, NatsCluster, PostgresNode, start_under_leader
from stamen.stack.servers import MotoServer
from stamen.store.migrate import apply_migrations

REGIONS = ("us-west-2", "us-east-1", "eu-west-1")
PRIMARY, STANDBY, THIRD = REGIONS
DATA_BUCKET = "stamen-results"
LONG = 3  # worksets whose middle step runs until released: still running when their region is lost


def _mark(step: str) -> str:
    # One marker per execution, named by the step, holding the work folder (cluster root / tenant / id).
    # No braces but template fields: argv items are pipeline templates.
    return (
        "import os,pathlib,time; d=pathlib.Path(os.environ['STAMEN_TEST_MARKS']); "
        f"(d/('{step}-'+str(time.time_ns()))).write_text(os.getcwd()); "
    )


def _put(key: str, body: str) -> str:
    return (
        f"import boto3; boto3.client('s3').put_object(Bucket='{DATA_BUCKET}', "
        f"Key='{{workset_id}}/{key}', Body=b'{body}'); "
    )


def pipeline(name: str, work: str) -> dict[str, Any]:
    """fetch (exported to S3: reused after a failover), work (local output: recomputed), publish."""
    python = "{python}"
    return {
        "name": name,
        "steps": [
            {"name": "fetch", "argv": [python, "-c", _mark("fetch") + _put("fetched", "reads")],
             "outputs": [f"s3://{DATA_BUCKET}/{{workset_id}}/fetched"]},
            {"name": "work", "argv": [python, "-c", work + _mark("work") + "open('worked','w').write('ok')"],
             "outputs": ["{workdir}/worked"]},
            {"name": "publish", "argv": [python, "-c", _mark("publish") + "assert open('worked').read() == 'ok'; "
                                         + _put("result", "done")],
             "outputs": [f"s3://{DATA_BUCKET}/{{workset_id}}/result"]},
        ],
    }  # fmt: skip


@dataclass
class Loopback:
    root: Path
    probe_interval: float = 0.5
    probe_timeout: float = 1.0
    fail_after: int = 3
    recover_after: int = 3
    lost_after: float = 2.0
    concurrency: int = 12
    work_seconds: float = 0.5  # the `failover-demo` pipeline's middle step
    nats: NatsCluster = field(init=False)
    moto: MotoServer = field(init=False)
    postgres: dict[str, PostgresNode] = field(init=False, default_factory=dict)
    services: dict[str, subprocess.Popen[bytes]] = field(init=False, default_factory=dict)

    @property
    def marks(self) -> Path:
        return self.root / "marks"

    @property
    def release(self) -> Path:
        return self.root / "release-long-jobs"

    def release_long_jobs(self) -> None:
        self.release.touch()

    @property
    def database_url(self) -> str:
        """What the services use: both PostgreSQL servers, only the writable one taken."""
        first = self.postgres[PRIMARY].dsn()
        return multi_host_dsn(
            first, [PostgresEndpoint(host="127.0.0.1", port=n.port) for n in self.postgres.values()]
        )

    def start_servers(self) -> None:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        self.marks.mkdir(parents=True, exist_ok=True)
        self.nats = NatsCluster(self.root, REGIONS)
        self.nats.start()
        self.moto = MotoServer(self.root / "moto").start()
        s3 = boto3.client("s3", endpoint_url=self.moto.url, region_name="us-east-1")
        for bucket in [DATA_BUCKET, *(f"stamen-control-{r}" for r in REGIONS)]:
            s3.create_bucket(Bucket=bucket)
        self.postgres[PRIMARY] = PostgresNode(self.root / f"pg-{PRIMARY}", name=PRIMARY).start()
        self.postgres[STANDBY] = PostgresNode(self.root / f"pg-{STANDBY}", name=STANDBY).clone_from(
            "127.0.0.1", self.postgres[PRIMARY].port
        )

    async def migrate(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    def write_files(self) -> dict[str, str]:
        regions = []
        for r in REGIONS:
            spec: dict[str, Any] = {
                "name": r,
                "primary": r == PRIMARY,
                "s3": {"endpoint_url": self.moto.url, "control_bucket": f"stamen-control-{r}"},
                "nats": {"servers": [self.nats.nodes[r].url]},
            }
            if r in self.postgres:
                spec["postgres"] = {"host": "127.0.0.1", "port": self.postgres[r].port}
            regions.append(spec)
        (self.root / "regions.yaml").write_text(yaml.safe_dump({"regions": regions}))
        clusters = [
            {"name": f"{r}-local", "region": r, "executor": "local", "max_concurrent": self.concurrency // 3,
             # The primary region is cheapest: it gets most of the work until it is lost.
             "price_factor": 0.7 if r == PRIMARY else 1.0,
             "config": {"workdir_root": str(self.root / "work" / r)}}
            for r in REGIONS
        ]  # fmt: skip
        (self.root / "clusters.yaml").write_text(yaml.safe_dump({"clusters": clusters}))
        # failover-long's middle step runs until the test lets it finish (`release_long_jobs`): it is
        # still running when its region is lost, whatever the load on the machine.
        wait = (f"import pathlib,time; [time.sleep(0.1) for _ in iter(lambda: not pathlib.Path('{self.release}')"
                ".exists(), False)]; ")  # fmt: skip
        pipelines = [
            pipeline("failover-demo", f"import time; time.sleep({self.work_seconds}); "),
            pipeline("failover-long", wait),
        ]
        (self.root / "pipelines.yaml").write_text(yaml.safe_dump({"pipelines": pipelines}))
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats.url,
            "AWS_ENDPOINT_URL": self.moto.url,
            "STAMEN_TEST_MARKS": str(self.marks),
            "STAMEN_STREAM_REPLICAS": "3",
            "STAMEN_STREAM_PLACEMENT_TAGS": f'["{LIFECYCLE_TAG}"]',
            "STAMEN_REGIONS_FILE": str(self.root / "regions.yaml"),
            "STAMEN_CLUSTERS_FILE": str(self.root / "clusters.yaml"),
            "STAMEN_PIPELINES_FILE": str(self.root / "pipelines.yaml"),
            "STAMEN_REGION_PROBE_INTERVAL_SECONDS": str(self.probe_interval),
            "STAMEN_REGION_PROBE_TIMEOUT_SECONDS": str(self.probe_timeout),
            "STAMEN_REGION_FAIL_AFTER": str(self.fail_after),
            "STAMEN_REGION_RECOVER_AFTER": str(self.recover_after),
            "STAMEN_REGION_LOST_AFTER_SECONDS": str(self.lost_after),
            "STAMEN_REGION_DB_FAILOVER": "true",
            "STAMEN_REGION_DB_SYNCHRONOUS": "true",
            "STAMEN_SCHEDULER_POLL_SECONDS": "0.2",
            "STAMEN_OUTBOX_POLL_SECONDS": "0.5",
            "STAMEN_MAX_CONCURRENT_WORKSETS": str(self.concurrency),
            "STAMEN_DEFAULT_TENANT_MAX_CONCURRENT": str(self.concurrency),
            "STAMEN_LOG_LEVEL": "INFO",
        }

    def start_services(self, env: dict[str, str], placement: dict[str, str]) -> None:
        """Each service in the region `placement` names (none in the primary region, which the run kills)."""
        for name, region in placement.items():
            log = (self.root / f"{name}.log").open("ab")
            self.services[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env={**env, "STAMEN_REGION": region, "STAMEN_HTTP_PORT": str(free_port())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def regions_cpu(self) -> tuple[float, float]:
        """The regions service's CPU seconds so far, and when they were read."""
        times = psutil.Process(self.services["regions"].pid).cpu_times()
        return times.user + times.system, time.monotonic()

    def regions_cpu_ms_per_round(self, since: tuple[float, float]) -> float:
        """What watching the regions costs: the regions service's CPU per probe round since `since`."""
        cpu, at = self.regions_cpu()
        return round((cpu - since[0]) * 1000 / max(1.0, (at - since[1]) / self.probe_interval), 2)

    def kill_region(self, region: str) -> float:
        """The region goes dark: its NATS node and its PostgreSQL are killed (SIGKILL, each process group).
        Returns the time by which both are dead: whatever commits after it, commits on the new primary."""
        self.nats.nodes[region].kill()
        if region in self.postgres:
            self.postgres[region].kill()
        return time.time()

    def stop(self) -> None:
        for proc in self.services.values():
            proc.terminate()
        for proc in self.services.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in self.postgres.values():
            node.stop()
        if hasattr(self, "nats"):
            self.nats.stop()
        if hasattr(self, "moto"):
            self.moto.stop()

    def logs(self, names: Sequence[str] = ("scheduler", "regions"), lines: int = 40) -> str:
        out = []
        for name in names:
            path = self.root / f"{name}.log"
            if path.exists():
                out.append(
                    f"--- {name}.log\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                )
        return "\n".join(out)


async def wait_for(check: Any, what: str, timeout: float, every: float = 0.2) -> Any:
    """Poll `check()` (async) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


# --- the scenario (tests/regions/test_failover.py and bench/region_failover.py) -------------------


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=2)
    try:
        return await conn.fetch(sql, *args, timeout=10)
    finally:
        await conn.close()


async def run_failover(lab: Loopback, n: int, report: dict[str, Any]) -> None:
    """The whole scenario, asserting as it goes; `report` collects the figures (test and bench alike)."""
    lab.start_servers()
    await lab.migrate()
    env = lab.write_files()
    lab.start_services(env, {"scheduler": STANDBY, "regions": REGIONS[2]})
    primary, standby = lab.postgres[PRIMARY], lab.postgres[STANDBY]

    # The regions service takes charge: it records the leader and makes replication synchronous.
    await wait_for(lambda: fetch(primary.dsn(), "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'"),
                   "synchronous replication to the standby", 60)  # fmt: skip
    baseline = lab.regions_cpu()
    pool = await asyncpg.create_pool(lab.database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        tenants = ["acme", "beta", "gamma", "delta"]
        started = time.monotonic()
        # A few long ones first: admitted first, to the cheapest region (the primary), still running there
        # when it is lost; then the short ones.
        long = [await enqueue(pool, tenants[i], pipeline="failover-long") for i in range(LONG)]
        ids = long + [
            await enqueue(pool, tenants[i % len(tenants)], pipeline="failover-demo") for i in range(n - LONG)
        ]
        report["worksets"] = n

        async def completed() -> int:
            return int(await pool.fetchval("SELECT count(*) FROM worksets WHERE state = 'completed'"))

        async def long_work_running_in_primary() -> bool:
            return bool(await pool.fetchval(
                """SELECT count(*) FROM step_runs WHERE workset_id = ANY($1) AND step = 'work' AND state = 'running'
                   AND cluster = $2""", long, f"{PRIMARY}-local"))  # fmt: skip

        async def mid_run() -> bool:  # a quarter has flowed, and a long job is running in the primary region
            return await completed() >= max(1, n // 4) and await long_work_running_in_primary()

        await wait_for(
            mid_run, "worksets completed while a long one works in the primary region", 300, every=0.1
        )
        report["completed_before_kill"] = await completed()
        killed_at = lab.kill_region(PRIMARY)
        report["killed_after_seconds"] = round(time.monotonic() - started, 1)

        # The standby is promoted (by the regions service: nothing here touches it).
        await wait_for(
            lambda: _not(fetch(standby.dsn(), "SELECT pg_is_in_recovery() AS r"), "r"), "standby promoted", 60
        )
        # The long jobs still running in the lost region are marked lost once it has been down long enough;
        # then they may finish (wherever they run now).
        await wait_for(lambda: pool.fetchval("SELECT count(*) FROM workset_runs WHERE outcome = 'lost'"),
                       "a running workset marked lost", 120)  # fmt: skip
        lab.release_long_jobs()
        # Work continues: every workset ends, in the regions that are left.
        await wait_for(lambda: _at_least(completed, n), f"all {n} worksets completed", 600 + n, every=0.5)
        report["run_seconds"] = round(time.monotonic() - started, 1)
        report["regions_service_cpu_ms_per_round"] = lab.regions_cpu_ms_per_round(baseline)
        await measure(lab, pool, ids, killed_at, report)
    finally:
        await pool.close()

    # The old primary comes back: its NATS node rejoins the cluster, its PostgreSQL starts as the leader
    # record says (not the leader: rewound and started as a standby of the new primary).
    lab.nats.nodes[PRIMARY].start()
    nc = await nats.connect(lab.nats.url.split(","))
    try:
        store = await LeaderStore.open(nc.jetstream(), replicas=3)
        leader = await store.get()
        assert leader is not None and leader.leader.node == STANDBY and leader.leader.term == 2
        rejoin_started = time.monotonic()
        assert await start_under_leader(primary, store) == "standby"
        report["rejoin_seconds"] = round(time.monotonic() - rejoin_started, 1)
    finally:
        await nc.close()
    [row] = await fetch(primary.dsn(), "SELECT pg_is_in_recovery() AS standby")
    assert row["standby"], "the old primary is a standby"
    conn = await asyncpg.connect(primary.dsn())
    try:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute(
                "INSERT INTO region_operations (region, kind, actor) VALUES ('x', 'failover', 'x')"
            )
    finally:
        await conn.close()
    await wait_for(lambda: fetch(standby.dsn(), "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 "
                                 "AND sync_state = 'sync'", PRIMARY), "old primary streaming, synchronous again", 60)  # fmt: skip
    # ...and its region is healthy again once the probes agree.
    await wait_for(lambda: fetch(standby.dsn(), "SELECT 1 FROM region_health WHERE region = $1 AND status = 'healthy'",
                                 PRIMARY), "primary region healthy again", 60)  # fmt: skip


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


async def _not(rows: Any, column: str) -> bool:
    return not (await rows)[0][column]


async def measure(
    lab: Loopback, pool: asyncpg.Pool, ids: list[str], killed_at: float, report: dict[str, Any]
) -> None:
    kill = datetime.fromtimestamp(killed_at, UTC)
    down = await pool.fetchrow(
        "SELECT at, reason FROM region_health_history WHERE region = $1 AND to_status = 'down' ORDER BY at LIMIT 1",
        PRIMARY,
    )
    assert down is not None, lab.logs()
    promotion = await pool.fetchrow(
        "SELECT at, detail FROM region_operations WHERE kind = 'database_promotion' AND region = $1", STANDBY
    )
    assert promotion is not None, lab.logs()
    first_after = await pool.fetchval("SELECT min(at) FROM workset_history WHERE at > $1", kill)
    report["detected_seconds"] = round((down["at"] - kill).total_seconds(), 2)
    report["promoted_seconds"] = round((promotion["at"] - kill).total_seconds(), 2)
    report["rto_seconds"] = round((first_after - kill).total_seconds(), 2)
    report["down_reason"] = down["reason"]

    states = Counter(
        r["state"] for r in await pool.fetch("SELECT state FROM worksets WHERE id = ANY($1)", ids)
    )
    assert states == {"completed": len(ids)}, states
    completions = await pool.fetch(
        "SELECT workset_id, count(*) AS n FROM workset_history WHERE to_state = 'completed' AND workset_id = ANY($1) "
        "GROUP BY workset_id", ids)  # fmt: skip
    assert len(completions) == len(ids) and {r["n"] for r in completions} == {1}, (
        "each workset completed once"
    )
    overlaps = await pool.fetchval(
        """SELECT count(*) FROM workset_runs a JOIN workset_runs b ON a.workset_id = b.workset_id AND a.attempt < b.attempt
           WHERE a.released_at IS NULL OR a.released_at > b.admitted_at""")  # fmt: skip
    assert overlaps == 0, "no workset ran two attempts at once"
    moved = await pool.fetch(
        "SELECT workset_id, outcome FROM workset_runs WHERE cluster = $1 AND outcome IN ('lost', 'rerouted')",
        f"{PRIMARY}-local",
    )
    report["moved_out"] = dict(Counter(r["outcome"] for r in moved))
    assert report["moved_out"].get("lost"), (
        "a job running in the lost region was marked lost after the threshold"
    )
    lost_reason = await pool.fetchval(
        "SELECT reason FROM workset_history WHERE from_state = 'running' AND to_state = 'queued' AND reason LIKE '%marked lost%' LIMIT 1")  # fmt: skip
    assert (
        f"region {PRIMARY} is down" in lost_reason
        and "retried elsewhere from its last completed step" in lost_reason
    )
    reused = await pool.fetchval(
        "SELECT count(*) FROM workset_history WHERE reason LIKE '%reused exported outputs of fetch%' AND workset_id = ANY($1)", ids)  # fmt: skip
    report["resumed_after_exported_step"] = reused
    # Real executions, from the markers the steps leave as they start. fetch's output is exported to S3: once
    # it is recorded as succeeded it never runs again. A fetch still running in the lost region when it went
    # down had not completed, so it runs again elsewhere (its run there is recorded 'lost').
    runs = Counter((p.name.split("-", 1)[0], Path(p.read_text()).name) for p in lab.marks.iterdir())
    fetch_states: dict[str, list[str]] = {ws: [] for ws in ids}
    for row in await pool.fetch(
        "SELECT workset_id, state FROM step_runs WHERE step = 'fetch' AND workset_id = ANY($1) ORDER BY id",
        ids,
    ):
        fetch_states[row["workset_id"]].append(row["state"])
    for ws, states_of_fetch in fetch_states.items():
        assert states_of_fetch.count("succeeded") == 1 and states_of_fetch[-1] == "succeeded", (
            ws,
            states_of_fetch,
        )
        # A run is recorded before its process starts. When the region's database dies under the commit
        # that records it, the commit can survive on the promoted standby while the scheduler saw it fail
        # and started nothing (seen once at load 9: no `step_submitted` for that run): such a run is
        # recorded, then marked lost, and never ran. Every other recorded run ran once; none ran unrecorded.
        lost = states_of_fetch.count("lost")
        assert len(states_of_fetch) - lost <= runs[("fetch", ws)] <= len(states_of_fetch), (
            "every run of fetch recorded",
            ws,
            states_of_fetch,
        )
        assert set(states_of_fetch[:-1]) <= {"lost"}, ("only a run lost with its region is run again", ws)
    report["fetch_rerun_after_loss"] = sum(1 for ws in ids if runs[("fetch", ws)] > 1)
    assert {runs[("publish", ws)] for ws in ids} == {1}
    report["work_step_runs"] = sum(runs[("work", ws)] for ws in ids)
    s3 = boto3.client("s3", endpoint_url=lab.moto.url, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=DATA_BUCKET, MaxKeys=10_000)["Contents"]
    assert sum(1 for o in listed if o["Key"].endswith("/result")) == len(ids)
    # No acknowledged event lost, none published twice: one workset.completed per workset in the R3 stream.
    nc = await nats.connect(lab.nats.url.split(","))
    try:

        async def completed_events() -> int:
            info = await nc.jetstream().stream_info(
                EVENTS_STREAM, subjects_filter="stamen.evt.*.workset.completed"
            )
            assert info.config.num_replicas == 3 and info.cluster is not None
            report["events_stream_peers"] = sorted(
                [info.cluster.leader or "", *(p.name for p in info.cluster.replicas or [])]
            )
            return sum((info.state.subjects or {}).values())

        # The relays publish what the new primary holds; JetStream's dedup drops what was published twice.
        await wait_for(
            lambda: _at_least(completed_events, len(ids)), "a workset.completed event per workset", 60
        )
        assert await completed_events() == len(ids), "one event per workset, none twice"
    finally:
        await nc.close()
