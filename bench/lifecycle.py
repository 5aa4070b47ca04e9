"""Worksets through the whole lifecycle on the embedded stack, as a new user runs it, beside the
machine's ceilings measured in the same run.

    python bench/lifecycle.py [--worksets 300] [--slots 10] [--flaky 0.1] [--breakdown] [--statement-cpu] [--json]

`stamen up --no-demo` starts everything (PostgreSQL, NATS, the S3 emulator, the services) in a
temporary folder, with a `STAMEN_PIPELINES_FILE` that overrides `fastq-qc` by three no-op steps
(`true`, a `sh` that fails once with a transient network error for the `--flaky` share of the
worksets, `true`), `--slots` worksets at once, retries after 1 s, and the API's per-principal rate
limit lifted (else it, not stamen, would set the pace). Everything else is as a new user gets it. The bench uploads one small
FASTQ pair to the emulator, submits `--worksets` worksets over the HTTP API (8 requests in flight)
and waits until every one has completed. It prints:

- throughput (worksets/s, first submission to last completion) and per-state latencies (p50/p99 of
  the time spent in each state before the next, from `workset_history`);
- PostgreSQL transactions per workset (`pg_stat_database` of stamen's database, the bench's own
  queries subtracted) and events per workset (rows written to the outbox);
- CPU per workset and peak RSS of every process: each service (with the step processes it starts),
  PostgreSQL (all its backends) and NATS; the S3 emulator is left out (it stands in for AWS); and their
  wake-ups per workset (threads put to sleep and woken: a count the machine does not change, where
  what each costs changes from one sitting to the next);
- PostgreSQL's CPU per workset by process: client backends (statements, commits, network), the
  checkpointer, WAL writer, background writer, autovacuum (launcher and workers), the postmaster;
- what PostgreSQL wrote per workset: WAL bytes and records, buffers written, and per table the rows
  inserted, updated (of which HOT: no index entry written), deleted, and autovacuum's passes in the run
  (an idle backend's counters reach pg_stat up to 10 s after its commit: a short run's last rows may be missing);
- the ceilings (bench/ceiling.py against the same PostgreSQL and NATS, just before the run) and the
  ratios: throughput / (PostgreSQL tx/s / transactions per workset), and the same for JetStream.

With `--breakdown`, PostgreSQL also logs every statement during the run (which slows it: keep that
run's throughput and CPU apart) and the bench prints which service ran which transactions, per workset.
`--statement-cpu` logs each protocol message's CPU and statement (log_statement_stats) and prints
PostgreSQL's CPU per workset by statement: parse, bind (planning), execute, simple query. Without
`--breakdown`, statements are not logged otherwise (their log line would count in the execute figure).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import boto3
import psutil
import yaml
from ceiling import ceiling_lines, measure_ceiling
from measure import ProcessMeter, bench_process, emit, latency_summary, machine, settled_transactions

from stamen.inputs.demo import demo_fastq
from stamen.tenancy import BucketGrantRepository

BUCKET = "bench-reads"
TENANTS = ("lab-a", "lab-b", "lab-c", "lab-d")
SUBMIT_IN_FLIGHT = 8
# What a flaky network looks like to stamen's diagnostics (a transient error: retried).
NET_ERROR = (
    "botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "
    '"https://bench-reads.s3.us-west-2.amazonaws.com/reads/B1_R1.fastq.gz"'
)
# $1 = the workset's name (flaky-* fail in their first attempt), $2 = the error line.
FLAKY_STEP = 'case "$1" in flaky-*) if [ "$STAMEN_ATTEMPT" = 1 ]; then echo "$2" >&2; exit 1; fi;; esac'
PIPELINES = {
    "pipelines": [
        {
            "name": "fastq-qc",
            "description": "bench/lifecycle.py: three no-op steps",
            "steps": [
                {"name": "first", "argv": ["true"]},
                {"name": "second", "argv": ["sh", "-c", FLAKY_STEP, "sh", "{workdir_name}", NET_ERROR]},
                {"name": "third", "argv": ["true"]},
            ],
        }
    ]
}
TERMINAL = ("completed", "dead_lettered", "cancelled", "archived")


class Stack:
    """`stamen up --no-demo` in a folder of its own, stopped with SIGINT like Ctrl-C."""

    def __init__(self, folder: Path, slots: int) -> None:
        self.folder = folder
        self.state_dir = folder / "state"
        (folder / "pipelines.yaml").write_text(yaml.safe_dump(PIPELINES))
        inherited = ("DATABASE_URL", "NATS_URL", "AWS_ENDPOINT_URL")  # the stack starts its own
        self.env = {k: v for k, v in os.environ.items() if k not in inherited and not k.startswith("STAMEN_")}
        self.env.update({
            "STAMEN_STATE_DIR": str(self.state_dir),
            "STAMEN_PIPELINES_FILE": str(folder / "pipelines.yaml"),
            "STAMEN_MAX_CONCURRENT_WORKSETS": str(slots),
            "STAMEN_DEFAULT_TENANT_MAX_CONCURRENT": str(slots),
            "STAMEN_LOCAL_CLUSTER_MAX_CONCURRENT": str(slots),
            "STAMEN_RETRY_INITIAL_SECONDS": "1",
            "STAMEN_RETRY_FACTOR": "1",
            "STAMEN_RETRY_CAP_SECONDS": "1",
            # The API's per-principal rate limit (10/s, burst 50) would cap the run at 10 worksets/s
            # and measure itself: every submission here comes from the one local-demo principal.
            "STAMEN_RATE_LIMIT_PER_SECOND": "100000",
            "STAMEN_RATE_LIMIT_BURST": "100000",
        })  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self.doc: dict[str, Any] = {}

    def start(self, timeout: float = 180.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stamen", "up", "--no-demo", "--json", "--state-dir", str(self.state_dir)],
            env=self.env, stdout=subprocess.PIPE, stderr=(self.folder / "up.log").open("w"), text=True,
            start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:  # progress lines, then one with the status once all is ready
            if "portal_url" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError(
                f"stamen up ended before it was ready: {(self.folder / 'up.log').read_text()[-3000:]}"
            )
        self.doc = json.loads((self.state_dir / "stack.json").read_text())

    async def wait_ready(self, timeout: float = 180.0) -> None:
        """Every service's /readyz says ready (its consumers started): `stamen up` reports the stack up
        as soon as the services answer, which can be before they consume."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            for name, info in self.doc["services"].items():
                while True:
                    try:
                        async with session.get(f"{info['url']}/readyz") as r:
                            if r.status == 200:
                                break
                            body = await r.text()
                    except aiohttp.ClientError as exc:
                        body = str(exc)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"service {name} not ready after {timeout:g} s: {body}")
                    await asyncio.sleep(0.5)

    @property
    def database_url(self) -> str:
        return str(self.doc["database_url"])

    def pids(self) -> dict[str, int]:
        pids = {name: int(info["pid"]) for name, info in self.doc["services"].items()}
        pids.update({name: int(info["pid"]) for name, info in self.doc["servers"].items()})
        return pids

    def service_url(self, name: str) -> str:
        return str(self.doc["services"][name]["url"])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def upload_reads(endpoint: str) -> dict[str, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    uris = {}
    for mate in (1, 2):
        key = f"reads/B1_R{mate}.fastq.gz"
        s3.put_object(Bucket=BUCKET, Key=key, Body=demo_fastq("B1", mate, reads=200))
        uris[f"r{mate}"] = f"s3://{BUCKET}/{key}"
    return uris


async def grant_reads(conn: asyncpg.Connection, tenants: tuple[str, ...]) -> None:
    """What an operator does first: the tenants may use the bucket their reads are in (stamen.tenancy)."""
    for tenant in tenants:
        await BucketGrantRepository(conn).grant(tenant, BUCKET, "read-write", granted_by="bench")


def workset(i: int, flaky_every: int, reads: dict[str, str]) -> tuple[str, dict[str, Any]]:
    name = f"{'flaky' if flaky_every and i % flaky_every == 0 else 'noop'}-{i:06d}"
    spec = {
        "name": name,
        "pipeline": "fastq-qc",
        "reference_genome": "GRCh38",
        "max_retries": 2,
        "samples": [{"id": "B1", "platform": "ILLUMINA", **reads}],
        "export_uri": f"s3://{BUCKET}/results/{name}/",
    }
    return TENANTS[i % len(TENANTS)], spec


class CountingConnection:
    """The bench's own connection to stamen's database: counts its transactions, to subtract them."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.transactions = 0

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        self.transactions += 1
        return list(await self.conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: object) -> Any:
        self.transactions += 1
        return await self.conn.fetchval(sql, *args)

    async def stamen_transactions(self) -> int:
        self.transactions += 2  # pg_stat_clear_snapshot() and the read itself
        return await settled_transactions(self.conn)


async def submit_all(portal: str, worksets: list[tuple[str, dict[str, Any]]]) -> None:
    queue = list(reversed(worksets))

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            tenant, spec = queue.pop()
            while True:
                async with session.post(
                    f"{portal}/api/v1/worksets", json=spec, headers={"X-Stamen-Tenant": tenant}
                ) as r:
                    if r.status == 429:  # as a client should: wait as long as it says, then again
                        await asyncio.sleep(float((await r.json())["details"]["retry_after"]))
                        continue
                    if r.status not in (200, 201):
                        raise RuntimeError(f"submitting {spec['name']}: {r.status} {(await r.text())[:500]}")
                    break

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(SUBMIT_IN_FLIGHT)))


async def wait_all_done(
    db: CountingConnection, n: int, meter: ProcessMeter, timeout: float
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        meter.sample_memory()
        rows = await db.fetch("SELECT state, count(*) AS n FROM worksets GROUP BY state")
        states = {r["state"]: int(r["n"]) for r in rows}
        if sum(states.get(s, 0) for s in TERMINAL) >= n or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.5)


async def state_latencies(db: CountingConnection) -> tuple[dict[str, Any], dict[str, float]]:
    """Time spent in each state before the next (by transition), and end-to-end figures."""
    rows = await db.fetch(
        """SELECT w.name, h.workset_id, h.from_state, h.to_state, h.at
           FROM workset_history h JOIN worksets w ON w.id = h.workset_id ORDER BY h.workset_id, h.version"""
    )
    by_transition: dict[str, list[float]] = collections.defaultdict(list)
    end_to_end: dict[str, list[float]] = collections.defaultdict(list)
    first_submit, last_done = None, None
    previous: asyncpg.Record | None = None
    for row in rows:
        if previous is not None and previous["workset_id"] == row["workset_id"]:
            seconds = (row["at"] - previous["at"]).total_seconds()
            by_transition[f"{row['from_state']} -> {row['to_state']}"].append(seconds)
        if row["to_state"] == "submitted":
            submitted_at = row["at"]
            first_submit = min(first_submit or submitted_at, submitted_at)
        if row["to_state"] == "completed":
            kind = "flaky" if row["name"].startswith("flaky-") else "clean"
            end_to_end[f"submitted -> completed ({kind})"].append((row["at"] - submitted_at).total_seconds())
            last_done = max(last_done or row["at"], row["at"])
        previous = row
    span = (last_done - first_submit).total_seconds() if first_submit and last_done else float("nan")
    latencies = {k: latency_summary(v) for k, v in sorted(by_transition.items(), key=lambda kv: -len(kv[1]))}
    latencies.update({k: latency_summary(v) for k, v in sorted(end_to_end.items())})
    return latencies, {"span_seconds": span}


HOLDING_A_SLOT = ("scheduled", "running")


def slot_occupancy(rows: list[asyncpg.Record], slots: int) -> dict[str, float]:
    """Where the run's wall time went, slot-wise: from the first submission to the last terminal
    state, the mean number of worksets holding a slot (admitted: scheduled or running), and the share
    of the time some slot was free while a workset was queued (admission lagging) or while none was
    (the queue starved: validation, or retries waiting out their backoff). Throughput with `slots` at
    once is (mean held / slot hold time): these tell a slow cycle from an idle one."""
    changes: list[tuple[Any, int, int]] = []  # (at, held delta, queued delta)
    for row in rows:
        held = (row["to_state"] in HOLDING_A_SLOT) - (row["from_state"] in HOLDING_A_SLOT)
        queued = (row["to_state"] == "queued") - (row["from_state"] == "queued")
        if held or queued:
            changes.append((row["at"], held, queued))
    if not rows or not changes:
        return {}
    start = min(r["at"] for r in rows)
    end = max(r["at"] for r in rows)
    total = (end - start).total_seconds()
    held = queued = 0
    held_seconds = lagging = starved = 0.0
    at = start
    for when, d_held, d_queued in [*sorted(changes, key=lambda c: c[0]), (end, 0, 0)]:
        seconds = (when - at).total_seconds()
        held_seconds += held * seconds
        if held < slots:
            if queued > 0:
                lagging += seconds
            else:
                starved += seconds
        held, queued, at = held + d_held, queued + d_queued, when
    return {
        "mean_held": round(held_seconds / total, 2) if total else float("nan"),
        "slot_free_while_queued_share": round(lagging / total, 3) if total else float("nan"),
        "slot_free_queue_empty_share": round(starved / total, 3) if total else float("nan"),
    }


# --- --breakdown: which service ran which transactions ---------------------------------------------

LOG_PREFIX = "@@%p %v@@ "
LOG_LINE = re.compile(r"^@@(\d+) (\S+)@@ (?:LOG|DETAIL|ERROR|STATEMENT|WARNING):\s+(.*)$")
STATEMENT = re.compile(r"^(?:statement|execute [^:]*|bind [^:]*):\s*(.*)$", re.S)


async def start_statement_log(conn: asyncpg.Connection, *, statements: bool, with_cpu: bool) -> None:
    await conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{LOG_PREFIX}'")
    if statements:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
    if with_cpu:
        await conn.execute("ALTER SYSTEM SET log_statement_stats = on")
    await conn.execute("SELECT pg_reload_conf()")


async def stop_statement_log(conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER SYSTEM RESET log_statement_stats")
    await conn.execute("ALTER SYSTEM RESET log_statement")
    await conn.execute("ALTER SYSTEM RESET log_line_prefix")
    await conn.execute("SELECT pg_reload_conf()")


async def backend_owners(conn: asyncpg.Connection, pids: dict[str, int]) -> dict[int, str]:
    """PostgreSQL backend pid -> the process (service) at the other end of its connection."""
    port_owner: dict[int, str] = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            for proc in procs:
                for c in proc.net_connections(kind="tcp"):
                    if c.laddr:
                        port_owner[c.laddr.port] = name
    rows = await conn.fetch("SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL")
    return {r["pid"]: port_owner.get(r["client_port"], "other") for r in rows}


def _label(statements: list[str]) -> str:
    significant = [
        s for s in statements if not re.match(r"(?is)^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)", s)
    ]
    if not significant:
        return "(empty: BEGIN/COMMIT only)"
    first = re.sub(r"\s+", " ", significant[0]).strip()
    first = re.sub(r"'[^']*'", "'…'", first)
    # The statement count stays visible when the first statement is cut: a claim that found nothing
    # (one statement) and one that went on to do the work read the same up to there.
    return (first[:90] + "…" if len(first) > 90 else first) + (
        f"  (+{len(significant) - 1} more)" if len(significant) > 1 else ""
    )


def transaction_breakdown(log_file: Path, offset: int, owners: dict[int, str], n: int) -> dict[str, Any]:
    """Group logged statements by (backend, virtual transaction id): one group = one transaction."""
    transactions: dict[tuple[int, str], list[str]] = collections.defaultdict(list)
    current: tuple[int, str] | None = None
    with log_file.open("r", errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = LOG_LINE.match(line)
            if m is None:
                if current is not None and line.startswith("\t") and transactions[current]:
                    transactions[current][-1] += " " + line.strip()
                continue
            pid, vxid, message = int(m.group(1)), m.group(2), m.group(3)
            s = STATEMENT.match(message)
            if s is None:
                current = None
                continue
            current = (pid, vxid)
            transactions[current].append(s.group(1))
    per_service: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    # Statements (BEGIN and COMMIT included) are round trips: each costs a send, a wake-up of the other
    # side and a parse/plan/execute, in the client and in PostgreSQL alike.
    statements_by: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (pid, _), statements in transactions.items():
        owner = owners.get(pid, "other (connection closed before the end)")
        per_service[owner][_label(statements)] += 1
        for statement in statements:
            statements_by[owner][_label([statement]) if statement.strip() else "(empty)"] += 1
    out: dict[str, Any] = {}
    for service, counter in sorted(per_service.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(counter.values())
        out[service] = {
            "per_workset": round(total / n, 2),
            "statements_per_workset": round(sum(statements_by[service].values()) / n, 2),
            "top": [
                {"per_workset": round(c / n, 2), "transaction": label} for label, c in counter.most_common(20)
            ],
            "top_statements": [
                {"per_workset": round(c / n, 2), "statement": label}
                for label, c in statements_by[service].most_common(20)
            ],
        }
    return out


# --- --statement-cpu: PostgreSQL's CPU per statement ------------------------------------------------

# log_statement_stats: after each protocol message, the backend's rusage for it and the statement it
# served. A Parse message is parse analysis and rewriting, a Bind message planning (a custom plan, or
# none when the statement's cached generic plan is used) and executor start-up, an Execute message
# the execution itself; a simple query (BEGIN, COMMIT: asyncpg sends those as such) is all of it,
# the commit's WAL flush included. Not in any message: a Sync's implicit commit (a statement outside
# BEGIN ... COMMIT), network I/O between messages, LISTEN/NOTIFY delivery, connection start.
STATS_TITLE = re.compile(r"^(PARSE MESSAGE|BIND MESSAGE|EXECUTE MESSAGE|QUERY) STATISTICS$")
STATS_USAGE = re.compile(r"([\d.]+) s user, ([\d.]+) s system")
PHASES = {"PARSE MESSAGE": "parse", "BIND MESSAGE": "bind", "EXECUTE MESSAGE": "execute", "QUERY": "simple"}


def statement_cpu(log_file: Path, offset: int, n: int, postgres_cpu_ms: float) -> dict[str, Any]:
    """CPU ms per workset by statement shape (its first 100 characters, literals elided) and message."""
    by_shape: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    calls: collections.Counter[str] = collections.Counter()
    record: dict[str, Any] | None = None  # the stats record being read: its phase, CPU, statement lines

    def close() -> None:
        if record is not None and record["statement"]:
            shape = re.sub(r"'[^']*'", "'…'", re.sub(r"\s+", " ", " ".join(record["statement"])).strip())[
                :100
            ]
            by_shape[shape][record["phase"]] += record["cpu"]
            if record["phase"] in ("execute", "simple"):
                calls[shape] += 1

    with log_file.open("r", errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = LOG_LINE.match(line)
            if m is None:
                if record is not None:
                    if record["cpu"] is None:
                        usage = STATS_USAGE.search(line)
                        if usage:
                            record["cpu"] = 1000 * (float(usage.group(1)) + float(usage.group(2)))
                    elif record["statement"]:
                        record["statement"].append(line.strip())
                continue
            kind = line.split("@@ ", 1)[1].split(":", 1)[0]
            if kind == "DETAIL" and record is not None and record["cpu"] is None:
                continue
            if (
                kind == "STATEMENT"
                and record is not None
                and record["cpu"] is not None
                and not record["statement"]
            ):
                record["statement"].append(m.group(3))
                continue
            close()
            title = STATS_TITLE.match(m.group(3)) if kind == "LOG" else None
            record = {"phase": PHASES[title.group(1)], "cpu": None, "statement": []} if title else None
    close()
    logged = sum(sum(c.values()) for c in by_shape.values())
    rows = sorted(by_shape.items(), key=lambda kv: -sum(kv[1].values()))
    return {
        "logged_ms_per_workset": round(logged / n, 2),
        "postgres_ms_per_workset": round(postgres_cpu_ms, 2),
        "by_phase_ms_per_workset": {
            phase: round(sum(c[phase] for c in by_shape.values()) / n, 3) for phase in PHASES.values()
        },
        "top": [
            {
                "statement": shape,
                "calls_per_workset": round(calls[shape] / n, 2),
                "ms_per_workset": round(sum(c.values()) / n, 3),
                **{phase: round(c[phase] / n, 3) for phase in PHASES.values()},
            }
            for shape, c in rows[:25]
        ],
    }


# --- what the run wrote ---------------------------------------------------------------------------

# Per table: rows inserted, updated (and how many of those updates were HOT: the new version on the same
# page, no index touched), deleted, and vacuums/analyzes by autovacuum; and the WAL and buffer writes of
# the whole server (WAL is written by the backends as they commit, buffers by the background writer,
# the checkpointer and the backends).
TABLE_WRITES_SQL = """SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count,
                             autoanalyze_count FROM pg_stat_user_tables"""
SERVER_WRITES_SQL = """SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.buffers_clean, b.buffers_alloc,
                              b.buffers_checkpoint, b.buffers_backend, b.checkpoints_timed + b.checkpoints_req AS checkpoints
                       FROM pg_stat_wal w, pg_stat_bgwriter b"""


async def write_counters(db: CountingConnection) -> dict[str, dict[str, int]]:
    counters = {
        r["relname"]: {k: int(v) for k, v in r.items() if k != "relname"}
        for r in await db.fetch(TABLE_WRITES_SQL)
    }
    counters["(server)"] = {k: int(v) for k, v in (await db.fetch(SERVER_WRITES_SQL))[0].items()}
    return counters


# Counted for the whole run, not per workset: they happen now and then, not for every workset.
RUN_TOTALS = ("autovacuum_count", "autoanalyze_count", "checkpoints")


def writes_per_workset(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], n: int
) -> dict[str, dict[str, float]]:
    """What changed during the run, per workset (RUN_TOTALS: in all); the tables written, most updated first."""
    out: dict[str, dict[str, float]] = {}
    for table, counts in after.items():
        delta = {k: v - before.get(table, {}).get(k, 0) for k, v in counts.items()}
        if any(delta.values()):
            out[table] = {k: v if k in RUN_TOTALS else round(v / n, 3) for k, v in delta.items()}
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "(server)", -kv[1].get("n_tup_upd", 0))))


# PostgreSQL's CPU by process: the client backends (statements, commits, network, NOTIFY) and the
# server's own processes, the work done outside any statement.
POSTGRES_PROCESS_KINDS = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "autovacuum worker",
    "logical replication launcher",
)


def postgres_cpu_by_process(postmaster: int) -> dict[str, float]:
    """CPU seconds so far of the postmaster's children by kind (client backends, or one of
    POSTGRES_PROCESS_KINDS), and of the postmaster with the children it has reaped (connections closed,
    autovacuum workers done)."""
    cpu: collections.Counter[str] = collections.Counter()
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(postmaster)
        t = root.cpu_times()
        cpu["postmaster and reaped children"] += t.user + t.system + t.children_user + t.children_system
        for child in root.children():
            with contextlib.suppress(psutil.Error):
                title = " ".join(child.cmdline())
                kind = next(
                    (k for k in POSTGRES_PROCESS_KINDS if f"postgres: {k}" in title), "client backends"
                )
                t = child.cpu_times()
                cpu[kind] += t.user + t.system
    return dict(cpu)


# --- the run --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    flaky_every = round(1 / args.flaky) if args.flaky > 0 else 0
    with tempfile.TemporaryDirectory(prefix="stamen-bench-") as tmp:
        stack = Stack(Path(tmp), args.slots)
        try:
            stack.start()
            return await measure(stack, args, flaky_every)
        finally:
            stack.stop()


async def measure(stack: Stack, args: argparse.Namespace, flaky_every: int) -> dict[str, Any]:
    await stack.wait_ready()
    pids = stack.pids()
    ceiling = await measure_ceiling(
        stack.doc["nats_url"], stack.database_url, args.ceiling_seconds, pids["postgres"]
    )
    reads = upload_reads(stack.doc["aws_endpoint_url"])
    worksets = [workset(i, flaky_every, reads) for i in range(args.worksets)]
    conn = await asyncpg.connect(stack.database_url)
    await grant_reads(conn, TENANTS)
    db = CountingConnection(conn)
    try:
        log_offset = 0
        pg_log = Path(stack.doc["servers"]["postgres"]["log"])
        if args.breakdown or args.statement_cpu:
            await start_statement_log(conn, statements=args.breakdown, with_cpu=args.statement_cpu)
            log_offset = await asyncio.to_thread(lambda: pg_log.stat().st_size)
        meter = ProcessMeter({k: v for k, v in pids.items() if k != "moto"})
        tx_before = await db.stamen_transactions()
        own_before = db.transactions
        writes_before = await write_counters(db)  # (its own transactions are subtracted with the others)
        meter.start()
        postgres_before = postgres_cpu_by_process(pids["postgres"])
        t0 = time.perf_counter()
        await submit_all(stack.service_url("portal"), worksets)
        submit_seconds = time.perf_counter() - t0
        states = await wait_all_done(db, args.worksets, meter, args.timeout)
        wall = time.perf_counter() - t0
        meter.sample_memory()
        cpu = meter.report(per=args.worksets)
        postgres_after = postgres_cpu_by_process(pids["postgres"])
        owners = await backend_owners(conn, pids) if args.breakdown else {}
        own_during = db.transactions - own_before
        tx_after = await db.stamen_transactions()
        writes = writes_per_workset(writes_before, await write_counters(db), args.worksets)
        latencies, span = await state_latencies(db)
        occupancy = slot_occupancy(
            await db.fetch("SELECT from_state, to_state, at FROM workset_history ORDER BY at"), args.slots
        )
        # Rows written to the outbox (published ones leave it): the ids its sequence handed out (the
        # table's n_tup_ins lags, a backend's counters reach pg_stat up to 10 s after its commit).
        events = int(
            await db.fetchval("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_id_seq")
        )
        if args.breakdown or args.statement_cpu:
            await stop_statement_log(conn)
    finally:
        await conn.close()
    n = args.worksets
    done = sum(states.get(s, 0) for s in TERMINAL)
    tx_per_workset = (tx_after - tx_before - own_during) / n
    throughput = n / span["span_seconds"] if done >= n else float("nan")
    stamen_cpu = sum(v["cpu_ms_per_unit"] for k, v in cpu.items() if k in stack.doc["services"])
    pg_tx_s = ceiling["postgres"]["tx_per_second"]
    js_s = ceiling.get("jetstream", {}).get("publish_ack_per_second", float("nan"))
    figures: dict[str, Any] = {
        "bench": "lifecycle",
        "machine": machine(),
        "worksets": n,
        "slots": args.slots,
        "flaky_share": round(1 / flaky_every, 3) if flaky_every else 0,
        "states_at_end": states,
        "all_completed": done >= n,
        "submit_seconds": round(submit_seconds, 2),
        "wall_seconds": round(wall, 2),
        "throughput_worksets_per_second": round(throughput, 2),
        "latencies": latencies,
        "slot_occupancy": occupancy,
        "transactions_per_workset": round(tx_per_workset, 1),
        "events_per_workset": round(events / n, 2),
        "cpu_ms_per_workset": {
            "stamen_services": round(stamen_cpu, 1),
            "stamen_services_and_postgres": round(stamen_cpu + cpu["postgres"]["cpu_ms_per_unit"], 1),
            "with_nats": round(
                stamen_cpu + cpu["postgres"]["cpu_ms_per_unit"] + cpu["nats"]["cpu_ms_per_unit"], 1
            ),
        },
        "processes": cpu,
        # Wake-ups (threads put to sleep and woken again) per workset, of all live processes but the emulator's:
        # what a workset costs in switches whatever a switch costs on the machine.
        "wakeups_per_workset": round(sum(v["wakeups"] for v in cpu.values()) / n, 1),
        # A backend that ends during the run moves from "client backends" to the postmaster's reaped children.
        "postgres_cpu_ms_per_workset_by_process": dict(
            sorted(
                (
                    (kind, round(1000 * (seconds - postgres_before.get(kind, 0.0)) / n, 2))
                    for kind, seconds in postgres_after.items()
                ),
                key=lambda kv: -kv[1],
            )
        ),
        "writes_per_workset": writes,
        "ceiling": ceiling,
        "postgres_bound_worksets_per_second": round(pg_tx_s / tx_per_workset, 1),
        "ratio_to_postgres_bound": round(throughput / (pg_tx_s / tx_per_workset), 3),
        "jetstream_bound_worksets_per_second": round(js_s / (events / n), 1),
        "ratio_to_jetstream_bound": round(throughput / (js_s / (events / n)), 3),
    }
    if args.breakdown:
        figures["breakdown"] = transaction_breakdown(pg_log, log_offset, owners, n)
    if args.statement_cpu:
        figures["statement_cpu"] = statement_cpu(pg_log, log_offset, n, cpu["postgres"]["cpu_ms_per_unit"])
    return figures


def lines_for(f: dict[str, Any]) -> list[str]:
    lines = [
        f"{f['worksets']} worksets x 3 no-op steps, {f['slots']} slots, {f['flaky_share']:.0%} fail once "
        f"(load average {f['machine']['load_average_1m']} on {f['machine']['cpus']} CPUs, commit {f['machine']['commit']})",
        f"all completed: {f['all_completed']} {f['states_at_end']}",
        f"throughput:                  {f['throughput_worksets_per_second']:8.2f} worksets/s "
        f"(submitted in {f['submit_seconds']} s, all done in {f['wall_seconds']} s)",
        f"PostgreSQL tx per workset:   {f['transactions_per_workset']:8.1f}   events per workset: {f['events_per_workset']}",
        f"CPU ms per workset:          {f['cpu_ms_per_workset']['stamen_services_and_postgres']:8.1f} "
        f"(services {f['cpu_ms_per_workset']['stamen_services']}, with NATS {f['cpu_ms_per_workset']['with_nats']})",
        "per process: CPU ms/workset, peak RSS MB (its own) / peak PSS MB (with its children), wake-ups/workset:",
        *(
            f"  {k:12s} {v['cpu_ms_per_unit']:8.1f} {v['peak_rss_mb']:8.0f} {v['tree_peak_pss_mb']:8.0f} "
            f"{v['wakeups'] / f['worksets']:8.1f}"
            for k, v in f["processes"].items()
        ),
        f"wake-ups per workset, all processes: {f['wakeups_per_workset']}",
        "PostgreSQL CPU ms per workset by process: "
        + ", ".join(f"{k} {v}" for k, v in f.get("postgres_cpu_ms_per_workset_by_process", {}).items()),
        *ceiling_lines(f["ceiling"]),
        f"PostgreSQL-bound ceiling: {f['postgres_bound_worksets_per_second']} worksets/s -> ratio {f['ratio_to_postgres_bound']}; "
        f"JetStream-bound: {f['jetstream_bound_worksets_per_second']} -> ratio {f['ratio_to_jetstream_bound']}",
        *(
            [
                f"slots held on average: {o['mean_held']} of {f['slots']}; some slot free while a workset was queued "
                f"{o['slot_free_while_queued_share']:.1%} of the run, with none queued {o['slot_free_queue_empty_share']:.1%}"
            ]
            if (o := f.get("slot_occupancy"))
            else []
        ),
        "time in each state before the next (p50 / p99 ms, n):",
    ]
    for name, s in f["latencies"].items():
        lines.append(f"  {name:38s} {s['p50_ms']:10.1f} {s['p99_ms']:10.1f}  {s['n']}")
    if w := f.get("writes_per_workset"):
        server = w.get("(server)", {})
        lines += [
            f"PostgreSQL writes per workset: WAL {server.get('wal_bytes', 0):.0f} bytes in {server.get('wal_records', 0)} records "
            f"({server.get('wal_fpi', 0)} full pages); buffers written by the checkpointer {server.get('buffers_checkpoint', 0)}, "
            f"the background writer {server.get('buffers_clean', 0)}, backends {server.get('buffers_backend', 0)}; "
            f"{server.get('checkpoints', 0)} checkpoints in the run",
            "  rows per workset:   inserted  updated      HOT  deleted   (in the run: autovacuums, autoanalyzes)",
            *(
                f"  {table:18s} {c['n_tup_ins']:8.2f} {c['n_tup_upd']:8.2f} {c['n_tup_hot_upd']:8.2f} {c['n_tup_del']:8.2f}"
                f"   {c['autovacuum_count']:4.0f} {c['autoanalyze_count']:4.0f}"
                for table, c in w.items()
                if table != "(server)"
            ),
        ]
    if "breakdown" in f:
        lines.append(
            "transactions per workset by service (statement log on: throughput and CPU of this run are not comparable):"
        )
        for service, b in f["breakdown"].items():
            lines.append(f"  {service}: {b['per_workset']} ({b['statements_per_workset']} statements)")
            lines += [f"      {t['per_workset']:7.2f}  {t['transaction']}" for t in b["top"]]
    if "statement_cpu" in f:
        s = f["statement_cpu"]
        phases = ", ".join(f"{k} {v}" for k, v in s["by_phase_ms_per_workset"].items())
        lines += [
            f"PostgreSQL CPU ms per workset by statement: {s['logged_ms_per_workset']} of its "
            f"{s['postgres_ms_per_workset']} within protocol messages ({phases})",
            "     ms  calls   parse    bind execute  simple  (per workset)",
            *(
                f"  {t['ms_per_workset']:6.3f} {t['calls_per_workset']:6.2f} {t['parse']:7.3f} {t['bind']:7.3f} "
                f"{t['execute']:7.3f} {t['simple']:7.3f}  {t['statement']}"
                for t in s["top"]
            ),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worksets", type=int, default=300)
    parser.add_argument("--slots", type=int, default=10, help="worksets at once (global, tenant and cluster)")
    parser.add_argument(
        "--flaky", type=float, default=0.1, help="share of worksets that fail once (transient)"
    )
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting after this long")
    parser.add_argument("--breakdown", action="store_true", help="log statements: transactions by service")
    parser.add_argument(
        "--statement-cpu",
        action="store_true",
        help="PostgreSQL's CPU per statement and protocol message (log_statement_stats)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    figures = asyncio.run(run(args))
    emit(figures, lines_for(figures), args.json)
    if not figures["all_completed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
