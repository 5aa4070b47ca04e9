"""Soak: worksets through the embedded stack while its services, NATS and PostgreSQL are killed, with
duplicate and malformed messages injected; then a one-line verdict from the database and from an
independent log that the steps themselves write.

    python bench/soak.py [--worksets 300] [--rate 1.5] [--slots 20] [--kills 12] [--nats-outage 30]
                         [--pg-outage 120] [--duplicates 20] [--malformed 16] [--seed 1] [--json]
    python bench/soak.py --control ...        # the same load without any fault
    python bench/soak.py --pair ...           # both, one after the other, and the ratio of their p50s

The bench runs the embedded stack itself (as `stamen up` does: PostgreSQL, moto, NATS, every service
with two scheduler replicas, all supervised) in a temporary folder, so it can hold a server down for a
chosen time: `ServerWatch.hold_down` kills it (SIGKILL) and starts it again, on the same port and data,
after the outage. Worksets are submitted over the HTTP API at `--rate` per second (each with an
Idempotency-Key, retried while the portal or PostgreSQL is away), validated for real against the S3
emulator, and run a 3-step no-op pipeline (`fastq-qc` overridden) whose every step appends `start` and
`end` lines (workset, attempt, step, pid, time) to `steps.log`: the independent record.

Faults, at seeded random times inside the submission window and apart from each other:
`--kills` SIGKILLs of random service processes, one NATS outage of `--nats-outage` s, one PostgreSQL
outage of `--pg-outage` s, `--duplicates` events already in STAMEN_EVENTS published again under a new
Nats-Msg-Id, `--malformed` bodies no consumer can use (not JSON, unknown type, no workset_id, a workset
that does not exist) on the events subjects.

The verdict line (`SOAK PASS` or `SOAK FAIL`) says: worksets terminal/completed, steps run twice and
overlapping (steps.log), peak concurrent steps against the limit, events lost/doubled (every event id
ever written to the outbox exactly once in STAMEN_EVENTS, injected and replayed copies aside), double effects of the
duplicates (more admissions than failures explain), malformed messages parked, the recovery time after
each fault (until every service answers ready again), and latency p50/p95.

Latency, precisely: from a workset's first `workset_history` row (written in the transaction that recorded
the submission: the moment PostgreSQL had it and the API answered 201) to its `completed` row, both
PostgreSQL's clock; over completed worksets. The client view starts instead at the client's first POST,
so it includes the retries while the portal was down or answered 503 DATABASE_UNAVAILABLE (PostgreSQL
down: nothing is recorded then). With --json, `latency_by_fault` splits completed worksets by the fault
whose window their first POST fell in (an outage and the 60 s after it, a SIGKILL and the 15 s after
it, or none) and gives each group's median seconds in each state, and its time queued while a slot was
free (the scheduler's lag; the rest of `queued` is waiting for the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from lifecycle import grant_reads, upload_reads
from measure import bench_process, machine, percentile
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from stamen.bus.connections import connect_nats
from stamen.bus.subjects import DLQ_STREAM, EVENTS_STREAM, event_subject
from stamen.settings import Settings
from stamen.stack.launcher import EmbeddedStack

TENANTS = ("lab-a", "lab-b", "lab-c")
TERMINAL = ("completed", "dead_lettered", "cancelled", "archived", "rejected")
STEPS = ("one", "two", "three")
# Every step runs this file: it appends start/end lines to steps.log (O_APPEND, one write per line).
STEP_SCRIPT = """\
import os, sys, time
log, seconds = sys.argv[1], float(sys.argv[2])
def line(kind):
    text = " ".join([kind, os.environ["STAMEN_WORKSET_ID"], os.environ["STAMEN_ATTEMPT"],
                     os.environ["STAMEN_STEP"], str(os.getpid()), "%.6f" % time.time()]) + "\\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, text.encode())
    os.close(fd)
line("start")
time.sleep(seconds)
line("end")
"""
SOAK_HEADER = "Stamen-Soak"


@dataclass
class Fault:
    kind: str  # kill, nats, postgres, duplicate, malformed
    at: float  # seconds after the first submission
    target: str = ""
    seconds: float = 0.0  # outage length
    started: float | None = None  # monotonic
    ended: float | None = None  # monotonic: the kill, or the end of the outage
    recovered: float | None = None  # monotonic: every service ready again

    @property
    def recovery_seconds(self) -> float | None:
        if self.ended is None or self.recovered is None:
            return None
        return round(self.recovered - self.ended, 2)


@dataclass
class Plan:
    faults: list[Fault] = field(default_factory=list)


def plan_faults(args: argparse.Namespace, window: float, services: list[str]) -> Plan:
    """Outages first (apart), kills and injections in what is left of the window, away from outages."""
    rng = random.Random(args.seed)
    faults: list[Fault] = []
    busy: list[tuple[float, float]] = []
    t = window * 0.15
    for kind, seconds in (("nats", args.nats_outage), ("postgres", args.pg_outage)):
        if seconds > 0:
            faults.append(Fault(kind, t, kind, seconds))
            busy.append((t - 5, t + seconds + args.fault_gap))
            t += seconds + args.fault_gap
    busy.append((-1e9, window * 0.05))

    def free_moment(spacing: float) -> float:
        """A random moment of the submission window away from outages and other kills; if there is none
        left, the first free moment after everything planned (the run then outlasts the submissions)."""
        for _ in range(1000):
            at = rng.uniform(window * 0.05, window * 0.95)
            if not any(a - spacing <= at <= b + spacing for a, b in busy):
                return at
        return max(b for _, b in busy) + spacing

    for _ in range(args.kills):
        at = free_moment(3.0)
        faults.append(Fault("kill", at, rng.choice(services)))
        busy.append((at, at + 5))
    # Injections need no quiet: any moment of the window (outages included: they are retried).
    faults += [Fault("duplicate", rng.uniform(window * 0.05, window)) for _ in range(args.duplicates)]
    faults += [Fault("malformed", rng.uniform(window * 0.05, window), str(i)) for i in range(args.malformed)]
    faults.sort(key=lambda f: f.at)
    return Plan(faults)


class Soak:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.steps_log = folder / "steps.log"
        self.stack: EmbeddedStack | None = None
        self.supervision: threading.Thread | None = None
        self.ready_timeline: list[tuple[float, bool]] = []
        self.submitted: dict[int, str] = {}
        self.first_try: dict[str, float] = {}  # workset id -> when its client first tried (epoch)
        self.submit_failures = 0
        self.t0 = 0.0
        self.injector: NATS | None = None

    # --- the stack ------------------------------------------------------------------------------

    def start_stack(self) -> None:
        script = self.folder / "soak_step.py"
        script.write_text(STEP_SCRIPT)
        step = ["{python}", str(script), str(self.steps_log), str(self.args.step_seconds)]
        pipelines = {"pipelines": [{"name": "fastq-qc", "description": "bench/soak.py: three no-op steps",
                                    "steps": [{"name": s, "argv": step} for s in STEPS]}]}  # fmt: skip
        (self.folder / "pipelines.yaml").write_text(yaml.safe_dump(pipelines))
        for key in ("DATABASE_URL", "NATS_URL", "AWS_ENDPOINT_URL"):  # the stack starts its own
            os.environ.pop(key, None)
        slots = str(self.args.slots)
        os.environ.update({
            "STAMEN_PIPELINES_FILE": str(self.folder / "pipelines.yaml"),
            "STAMEN_MAX_CONCURRENT_WORKSETS": slots,
            "STAMEN_DEFAULT_TENANT_MAX_CONCURRENT": slots,
            "STAMEN_LOCAL_CLUSTER_MAX_CONCURRENT": slots,
            "STAMEN_LOG_FORMAT": "json",
            "STAMEN_RETRY_INITIAL_SECONDS": "1",
            "STAMEN_RETRY_CAP_SECONDS": "2",
        })  # fmt: skip
        settings = Settings()
        settings.state_dir = self.folder / "state"
        self.stack = EmbeddedStack(settings, settings.state_dir)
        self.stack.start_servers(lambda msg: print(f"-> {msg}", file=sys.stderr))
        asyncio.run(record_committed_events(self.database_url))  # this thread runs no event loop
        self.stack.start_services()
        self.supervision = threading.Thread(
            target=self.stack.supervise_forever, kwargs={"handle_signals": False}, name="supervision"
        )
        self.supervision.start()

    def stop_stack(self) -> None:
        if self.stack is None:
            return
        self.stack.request_stop()
        if self.supervision is not None:
            self.supervision.join(180)
        else:
            self.stack.stop()

    def instances(self) -> list[str]:
        """The service processes (one per replica: scheduler, scheduler-2, ...), in start order."""
        assert self.stack is not None and self.stack.supervisor is not None
        return list(self.stack.supervisor.processes)

    @property
    def portal(self) -> str:
        assert self.stack is not None and self.stack.supervisor is not None
        return f"http://127.0.0.1:{self.stack.supervisor.processes['portal'].port}"

    @property
    def database_url(self) -> str:
        assert self.stack is not None and self.stack.endpoints is not None
        return self.stack.endpoints.database_url

    @property
    def nats_url(self) -> str:
        assert self.stack is not None and self.stack.endpoints is not None
        return self.stack.endpoints.nats_url

    async def all_ready(self, session: aiohttp.ClientSession) -> bool:
        assert self.stack is not None and self.stack.supervisor is not None
        procs = list(self.stack.supervisor.processes.values())

        async def ready(port: int, pid: int | None) -> bool:
            try:
                async with session.get(
                    f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    body = await r.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return False
            return r.status == 200 and body.get("pid") == pid

        return all(await asyncio.gather(*(ready(p.port, p.pid) for p in procs)))

    async def watch_readiness(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                self.ready_timeline.append((time.monotonic(), await self.all_ready(session)))
                await asyncio.sleep(0.5)

    async def wait_all_ready(self, plan: Plan, timeout: float) -> None:
        last = max((f.ended or 0.0 for f in plan.faults), default=0.0)
        for _ in range(int(timeout / 0.5)):
            if self.recovered_after(last) is not None:
                return
            await asyncio.sleep(0.5)

    def recovered_after(self, moment: float) -> float | None:
        for at, ready in self.ready_timeline:
            if at >= moment and ready:
                return at
        return None

    # --- load -----------------------------------------------------------------------------------

    async def upload_reads(self) -> dict[str, str]:
        """The reads, in a bucket the tenants were granted (as an operator would before they submit)."""
        assert (
            self.stack is not None
            and self.stack.endpoints is not None
            and self.stack.endpoints.aws_endpoint_url
        )
        reads = upload_reads(self.stack.endpoints.aws_endpoint_url)
        conn = await asyncpg.connect(self.database_url)
        try:
            await grant_reads(conn, TENANTS)
        finally:
            await conn.close()
        return reads

    async def submit_all(self, reads: dict[str, str]) -> None:
        """`--worksets` at `--rate` per second; each retried (same Idempotency-Key) until accepted."""

        async def one(session: aiohttp.ClientSession, i: int) -> None:
            first_try = time.time()
            spec = {"name": f"soak-{i:05d}", "pipeline": "fastq-qc", "reference_genome": "GRCh38",
                    "max_retries": 3, "samples": [{"id": "B1", "platform": "ILLUMINA", **reads}]}  # fmt: skip
            headers = {"X-Stamen-Tenant": TENANTS[i % len(TENANTS)], "Idempotency-Key": f"soak-{i}"}
            while True:
                try:
                    async with session.post(f"{self.portal}/api/v1/worksets", json=spec, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=15)) as r:  # fmt: skip
                        body = await r.json(content_type=None)
                        if r.status in (200, 201):
                            self.submitted[i] = body["workset_id"]
                            self.first_try[body["workset_id"]] = first_try
                            return
                        if r.status == 429:  # the portal's rate limit, after a burst of retries
                            await asyncio.sleep(float(body.get("details", {}).get("retry_after", 1.0)))
                            continue
                        if r.status < 500:
                            raise RuntimeError(f"submission {i} refused: {r.status} {body}")
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass
                self.submit_failures += 1
                await asyncio.sleep(1.0)

        async with aiohttp.ClientSession() as session:
            tasks = []
            for i in range(self.args.worksets):
                delay = self.t0 + i / self.args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, i)))
            await asyncio.gather(*tasks)

    # --- faults ---------------------------------------------------------------------------------

    async def inject(self, plan: Plan) -> None:
        outages = []
        for fault in plan.faults:
            delay = self.t0 + fault.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if fault.kind in ("nats", "postgres"):  # runs its course while the next faults come
                outages.append(asyncio.create_task(self.apply(fault)))
            else:
                await self.apply(fault)
        await asyncio.gather(*outages)

    async def apply(self, fault: Fault) -> None:
        assert self.stack is not None and self.stack.supervisor is not None
        fault.started = time.monotonic()
        if fault.kind == "kill":
            proc = self.stack.supervisor.processes[fault.target]
            if proc.pid is not None and proc.alive:
                os.kill(proc.pid, signal.SIGKILL)
            fault.ended = time.monotonic()
            print(f"   fault: SIGKILL {fault.target} (pid {proc.pid})", file=sys.stderr)
        elif fault.kind in ("nats", "postgres"):
            print(f"   fault: {fault.kind} down for {fault.seconds:g}s", file=sys.stderr)
            self.stack.watches[fault.kind].hold_down(fault.seconds)
            await asyncio.sleep(fault.seconds)
            fault.ended = time.monotonic()
        else:
            await self.inject_message(fault)
            fault.ended = time.monotonic()

    async def inject_message(self, fault: Fault) -> None:
        """On the injector's own connection (it reconnects after the NATS outage like any client)."""
        if self.injector is None:
            self.injector = await connect_nats(self.nats_url, name="soak-injector")
        js = self.injector.jetstream()
        for _ in range(30):  # NATS may be away: try again
            try:
                if fault.kind == "duplicate":
                    info = await js.stream_info(EVENTS_STREAM)
                    seq = random.Random(fault.at).randint(info.state.first_seq, max(info.state.first_seq,
                                                                                     info.state.last_seq))  # fmt: skip
                    original = await js.get_msg(EVENTS_STREAM, seq)
                    headers = {**(original.headers or {}), "Nats-Msg-Id": f"soak-dup-{uuid.uuid4()}",
                               SOAK_HEADER: "duplicate"}  # fmt: skip
                    await js.publish(str(original.subject), original.data or b"", headers=headers)
                    fault.target = str(original.headers.get("Stamen-Event-Type") if original.headers else "")
                else:
                    subject, body = malformed_message(int(fault.target))
                    await js.publish(subject, body, headers={"Nats-Msg-Id": f"soak-bad-{fault.target}",
                                                             SOAK_HEADER: f"malformed-{fault.target}"})  # fmt: skip
                return
            except Exception as exc:
                print(f"   injection retried: {exc}", file=sys.stderr)
                await asyncio.sleep(2)

    # --- waiting and the verdict ----------------------------------------------------------------

    async def wait_settled(self, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        states: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(self.database_url, timeout=5)
                try:
                    rows = await conn.fetch("SELECT state, count(*) AS n FROM worksets GROUP BY state")
                    unpublished = await conn.fetchval("SELECT count(*) FROM outbox")
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(1)
                continue
            states = {r["state"]: int(r["n"]) for r in rows}
            done = sum(states.get(s, 0) for s in TERMINAL)
            if done >= self.args.worksets and not unpublished:
                return states
            await asyncio.sleep(1)
        return states


def malformed_message(i: int) -> tuple[str, bytes]:
    """Bodies no consumer can act on, on subjects the services consume."""
    kind = i % 4
    envelope = {"id": str(uuid.uuid4()), "type": "workset.submitted", "occurred_at": "2026-01-01T00:00:00Z",
                "workset_id": None, "tenant_id": "soak", "region": "us-west-2",
                "correlation_id": str(uuid.uuid4()), "schema_version": 2,
                "payload": {"name": "x", "source": "api", "sample_count": 0}}  # fmt: skip
    if kind == 0:
        return event_subject("soak", "workset.submitted"), b"this is not JSON {"
    if kind == 1:
        return event_subject("soak", "workset.submitted"), json.dumps(
            {**envelope, "type": "workset.teleported"}
        ).encode()
    if kind == 2:
        return event_subject("soak", "workset.submitted"), json.dumps(envelope).encode()  # workset_id null
    failed = {**envelope, "type": "workset.failed", "workset_id": f"ws-missing-{i}",
              "payload": {"attempt": 1, "reason": "injected"}}  # fmt: skip
    return event_subject("soak", "workset.failed"), json.dumps(failed).encode()


def read_steps(path: Path) -> dict[str, Any]:
    """From the steps' own log: runs, steps run twice, overlaps within a workset, peak concurrency."""
    starts: dict[tuple[str, str, str, str], float] = {}
    runs: list[tuple[str, str, float, float]] = []  # workset, step, start, end
    if path.exists():
        for line in path.read_text().splitlines():
            kind, ws, attempt, step, pid, at = line.split()
            key = (ws, attempt, step, pid)
            if kind == "start":
                starts[key] = float(at)
            elif key in starts:
                runs.append((ws, step, starts.pop(key), float(at)))
    unfinished = len(starts)
    per_step = collections.Counter((ws, step) for ws, step, _, _ in runs)
    twice = sum(1 for n in per_step.values() if n > 1)
    by_ws: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for ws, _, a, b in runs:
        by_ws[ws].append((a, b))
    overlaps = 0
    for intervals in by_ws.values():
        intervals.sort()
        overlaps += sum(1 for (a1, b1), (a2, _) in itertools.pairwise(intervals) if a2 < b1)
    points = sorted([(a, 1) for _, _, a, _ in runs] + [(b, -1) for _, _, _, b in runs])
    peak = now = 0
    for _, delta in points:
        now += delta
        peak = max(peak, now)
    return {"runs": len(runs), "unfinished": unfinished, "steps_twice": twice, "overlaps": overlaps,
            "peak_concurrent": peak, "worksets": len(by_ws)}  # fmt: skip


async def _every_message(js: JetStreamContext, stream: str) -> AsyncIterator[RawStreamMsg]:
    info = await js.stream_info(stream)
    if not info.state.messages:
        return  # empty (the control run parks nothing): first_seq is 0, which no message has
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            yield await js.get_msg(stream, seq)
        except NotFoundError:
            continue  # deleted (a replayed or resolved parked message)


async def read_stream(nats_url: str) -> dict[str, Any]:
    """Every message of STAMEN_EVENTS and STAMEN_DLQ, by direct get (sequence by sequence)."""
    nc = await connect_nats(nats_url, name="soak-reader")
    js = nc.jetstream()
    counts: collections.Counter[str] = collections.Counter()
    injected = replays = 0
    parked_malformed: set[str] = set()
    try:
        async for msg in _every_message(js, EVENTS_STREAM):
            headers = msg.headers or {}
            if SOAK_HEADER in headers:
                injected += 1
            elif "Stamen-Replay-Of" in headers:
                replays += 1
            else:
                counts[str(headers.get("Nats-Msg-Id", ""))] += 1
        async for msg in _every_message(js, DLQ_STREAM):
            tag = str((msg.headers or {}).get(SOAK_HEADER, ""))
            if tag.startswith("malformed-"):
                parked_malformed.add(tag)
    finally:
        await nc.close()
    return {
        "ids": counts,
        "injected": injected,
        "replays": replays,
        "parked_malformed": len(parked_malformed),
    }


async def record_committed_events(database_url: str) -> None:
    """Every event id the outbox is given, kept in a table of the soak's own: published rows leave the
    outbox, and the verdict needs every committed event. Installed before the services start; a row
    inserted inside a transaction that rolls back is rolled back with it."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """CREATE TABLE soak_committed_events (event_id UUID NOT NULL);
               CREATE FUNCTION soak_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO soak_committed_events VALUES (NEW.event_id); RETURN NULL; END $$;
               CREATE TRIGGER soak_record_event AFTER INSERT ON outbox
                   FOR EACH ROW EXECUTE FUNCTION soak_record_event();"""
        )
    finally:
        await conn.close()


async def read_database(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        outbox = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM soak_committed_events")}
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox")
        history = await conn.fetch(
            "SELECT workset_id, to_state, at FROM workset_history ORDER BY workset_id, version"
        )
        parked_worksets = await conn.fetchval("SELECT count(*) FROM dead_letters")
        replayed = await conn.fetchval("SELECT count(*) FROM dlq_message_actions WHERE action = 'replayed'")
    finally:
        await conn.close()
    latencies, double_effects = [], 0
    completed_at: dict[str, float] = {}
    by_ws: dict[str, list[asyncpg.Record]] = collections.defaultdict(list)
    admissions = sorted(r["at"].timestamp() for r in history if r["to_state"] == "scheduled")
    for row in history:
        by_ws[row["workset_id"]].append(row)
    for rows in by_ws.values():
        states = [r["to_state"] for r in rows]
        # An event handled twice would show as a second validation or completion, an admission without a
        # `queued` before it, or a failure without an admission before it.
        if (states.count("validating") > 1 or states.count("completed") > 1
                or states.count("scheduled") > states.count("queued")
                or states.count("failed") > states.count("scheduled")):  # fmt: skip
            double_effects += 1
        if states and states[-1] == "completed":
            latencies.append((rows[-1]["at"] - rows[0]["at"]).total_seconds())
            completed_at[rows[0]["workset_id"]] = rows[-1]["at"].timestamp()
    timelines = {ws: [(r["to_state"], r["at"].timestamp()) for r in rows] for ws, rows in by_ws.items()}
    return {"outbox": outbox, "unpublished": unpublished, "latencies": latencies, "double_effects": double_effects,
            "completed_at": completed_at, "admissions": admissions, "timelines": timelines,
            "parked_worksets": parked_worksets, "replayed": replayed}  # fmt: skip


def time_in_states(timeline: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds a workset spent in each state it passed through (visits added up), from its history."""
    spent: dict[str, float] = collections.defaultdict(float)
    for (state, at), (_, then) in itertools.pairwise(timeline):
        spent[state] += then - at
    return dict(spent)


HOLDING = ("scheduled", "running")  # the states in which a workset holds one of the slots


def free_slot_seconds(
    timelines: dict[str, list[tuple[str, float]]], slots: int
) -> Callable[[float, float], float]:
    """A function of (from, to): the seconds of that span in which fewer than `slots` worksets held a
    slot. Time queued while a slot was free is the scheduler's lag; the rest is waiting for the limit."""
    changes: list[tuple[float, int]] = []
    for timeline in timelines.values():
        for (state, at), (_, then) in itertools.pairwise(timeline):
            if state in HOLDING:
                changes += [(at, 1), (then, -1)]
    changes.sort()
    moments, held, now = [], [], 0
    for at, delta in changes:
        now += delta
        moments.append(at)
        held.append(now)

    def seconds(start: float, end: float) -> float:
        # held[i] is the count from moments[i] until moments[i + 1]; before moments[0] it is 0.
        free, at = 0.0, start
        i = bisect.bisect_right(moments, start) - 1
        while at < end:
            until = min(moments[i + 1], end) if i + 1 < len(moments) else end
            if i < 0 or held[i] < slots:
                free += until - at
            at, i = until, i + 1
        return free

    return seconds


def where_latency_goes(
    soak: Soak, plan: Plan, timelines: dict[str, list[tuple[str, float]]]
) -> dict[str, Any]:
    """Latency of completed worksets by what was happening when their client first tried to submit: a
    PostgreSQL or NATS outage (or the 60 s after it), a SIGKILL of a service (the 15 s after it), or
    nothing; with the median seconds spent in each state (workset_history), so a slow group shows where
    it waited."""
    offset = time.time() - time.monotonic()  # monotonic -> epoch
    windows: list[tuple[str, float, float]] = []
    for f in plan.faults:
        if f.started is None or f.ended is None:
            continue
        if f.kind in ("nats", "postgres"):
            windows.append((f.kind, f.started + offset, f.ended + offset + 60))
        elif f.kind == "kill":
            windows.append((f"kill {f.target}", f.started + offset, f.ended + offset + 15))
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for ws, first_try in soak.first_try.items():
        timeline = timelines.get(ws)
        if not timeline or timeline[-1][0] != "completed":
            continue
        # The latest fault that began before the first try and whose window it falls in.
        around = [(a, name) for name, a, b in windows if a <= first_try <= b]
        context = max(around)[1] if around else "no fault"
        groups[context.split(" ")[0] if context.startswith("kill") else context].append(ws)
        if context.startswith("kill"):
            groups[context].append(ws)
    free = free_slot_seconds(timelines, soak.args.slots)

    def queued_with_a_free_slot(timeline: list[tuple[str, float]]) -> float:
        return sum(
            free(at, then) for (state, at), (_, then) in itertools.pairwise(timeline) if state == "queued"
        )

    report: dict[str, Any] = {}
    for context, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        spent = [time_in_states(timelines[ws]) for ws in members]
        states = sorted({s for d in spent for s in d})
        latency = [timelines[ws][-1][1] - timelines[ws][0][1] for ws in members]
        report[context] = {
            "n": len(members),
            "latency_p50": round(percentile(latency, 50), 2),
            "latency_p95": round(percentile(latency, 95), 2),
            "client_p50": round(
                percentile([timelines[ws][-1][1] - soak.first_try[ws] for ws in members], 50), 2
            ),
            "state_p50": {s: round(percentile([d.get(s, 0.0) for d in spent], 50), 2) for s in states},
            "state_p95": {s: round(percentile([d.get(s, 0.0) for d in spent], 95), 2) for s in states},
            "queued_with_a_free_slot_p50": round(
                percentile([queued_with_a_free_slot(timelines[ws]) for ws in members], 50), 2
            ),
            "queued_with_a_free_slot_p95": round(
                percentile([queued_with_a_free_slot(timelines[ws]) for ws in members], 95), 2
            ),
        }
    return report


def summarise(args: argparse.Namespace, soak: Soak, plan: Plan, states: dict[str, int], steps: dict[str, Any],
              stream: dict[str, Any], db: dict[str, Any], elapsed: float) -> tuple[dict[str, Any], str]:  # fmt: skip
    ids: collections.Counter[str] = stream["ids"]
    lost = len(db["outbox"] - set(ids))
    doubled = sum(1 for event_id, n in ids.items() if event_id in db["outbox"] and n > 1)
    strangers = sum(1 for event_id in ids if event_id not in db["outbox"])
    terminal = sum(states.get(s, 0) for s in TERMINAL)
    completed = states.get("completed", 0)
    lat = db["latencies"]
    # As the submitting client saw it: from its first try (a PostgreSQL or portal outage keeps it retrying).
    seen = [db["completed_at"][ws] - at for ws, at in soak.first_try.items() if ws in db["completed_at"]]
    recovery: dict[str, list[float]] = collections.defaultdict(list)
    admitting_again: dict[str, float] = {}
    for f in plan.faults:
        if f.kind in ("kill", "nats", "postgres") and f.ended is not None:
            f.recovered = soak.recovered_after(f.ended)
            if f.recovery_seconds is not None:
                recovery[f.kind].append(f.recovery_seconds)
        if f.kind in ("nats", "postgres") and f.ended is not None:
            # When admission went on after the outage (wall clock: the history's own times).
            ended_wall = time.time() - (time.monotonic() - f.ended)
            after = [a for a in db["admissions"] if a >= ended_wall]
            if after:
                admitting_again[f.kind] = round(after[0] - ended_wall, 1)
    malformed = sum(1 for f in plan.faults if f.kind == "malformed")
    duplicates = sum(1 for f in plan.faults if f.kind == "duplicate")
    ok = (
        terminal == args.worksets
        and completed == args.worksets
        and steps["steps_twice"] == 0
        and steps["overlaps"] == 0
        and steps["peak_concurrent"] <= args.slots
        and lost == 0
        and doubled == 0
        and db["unpublished"] == 0
        and db["double_effects"] == 0
        and stream["parked_malformed"] == malformed
        and all(f.recovered is not None for f in plan.faults if f.kind in ("kill", "nats", "postgres"))
    )

    def rec(kind: str) -> str:
        values = recovery.get(kind)
        if not values:
            return f"{kind} -"
        if len(values) == 1:
            again = (
                f" (admitting again after {admitting_again[kind]:.1f}s)" if kind in admitting_again else ""
            )
            return f"{kind} {values[0]:.1f}s{again}"
        return f"{kind} p50 {percentile(values, 50):.1f}s max {max(values):.1f}s (n={len(values)})"

    verdict = (
        f"SOAK {'PASS' if ok else 'FAIL'}: {terminal}/{args.worksets} terminal ({completed} completed), "
        f"steps twice {steps['steps_twice']}, overlaps {steps['overlaps']}, peak {steps['peak_concurrent']}/"
        f"{args.slots} concurrent (over-limit {max(0, steps['peak_concurrent'] - args.slots)}), events lost {lost} "
        f"doubled {doubled} of {len(db['outbox'])}, duplicates {duplicates} (double effects {db['double_effects']}), "
        f"malformed parked {stream['parked_malformed']}/{malformed}, recovery: {rec('kill')}, {rec('nats')}, "
        f"{rec('postgres')}; latency p50 {percentile(lat, 50):.1f}s p95 {percentile(lat, 95):.1f}s "
        f"(client view p50 {percentile(seen, 50):.1f}s p95 {percentile(seen, 95):.1f}s)"
    )
    figures = {
        "bench": "soak",
        "machine": machine(),
        "ok": ok,
        "verdict": verdict,
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "elapsed_seconds": round(elapsed, 1),
        "states": states,
        "steps": steps,
        "events": {
            "outbox": len(db["outbox"]),
            "lost": lost,
            "doubled": doubled,
            "unknown_in_stream": strangers,
            "unpublished": db["unpublished"],
            "injected_copies": stream["injected"],
            "replays": stream["replays"],
        },
        "duplicates": {"injected": duplicates, "double_effects": db["double_effects"]},
        "malformed": {"injected": malformed, "parked": stream["parked_malformed"]},
        "dlq_replays_recorded": db["replayed"],
        "parked_worksets": db["parked_worksets"],
        "submit_retries": soak.submit_failures,
        "faults": [
            asdict(f) | {"recovery_seconds": f.recovery_seconds}
            for f in plan.faults
            if f.kind in ("kill", "nats", "postgres")
        ],
        "recovery_seconds": dict(recovery),
        "admitting_again_after_seconds": admitting_again,
        "latency_by_fault": where_latency_goes(soak, plan, db["timelines"]),
        "latency_seconds": {
            "n": len(lat),
            "p50": round(percentile(lat, 50), 2),
            "p95": round(percentile(lat, 95), 2),
            "max": round(max(lat), 2) if lat else None,
        },
        "client_latency_seconds": {
            "n": len(seen),
            "p50": round(percentile(seen, 50), 2),
            "p95": round(percentile(seen, 95), 2),
            "max": round(max(seen), 2) if seen else None,
        },
    }
    return figures, verdict


async def run(args: argparse.Namespace, folder: Path) -> tuple[dict[str, Any], str]:
    soak = Soak(args, folder)
    started = time.monotonic()
    # EmbeddedStack is synchronous (it runs event loops of its own): from a thread.
    await asyncio.to_thread(soak.start_stack)
    try:
        reads = await soak.upload_reads()
        stop = asyncio.Event()
        readiness = asyncio.create_task(soak.watch_readiness(stop))
        window = args.worksets / args.rate
        plan = plan_faults(args, window, soak.instances()) if not args.control else Plan()
        print(
            f"-> submitting {args.worksets} worksets over {window:.0f}s; {len(plan.faults)} faults",
            file=sys.stderr,
        )
        soak.t0 = time.monotonic()
        await asyncio.gather(soak.submit_all(reads), soak.inject(plan))
        states = await soak.wait_settled(args.timeout)
        await soak.wait_all_ready(plan, timeout=180)  # the last fault's recovery is measured too
        stop.set()
        await readiness
        steps = read_steps(soak.steps_log)
        stream = await read_stream(soak.nats_url)
        db = await read_database(soak.database_url)
        if soak.injector is not None:
            await soak.injector.close()
        return summarise(args, soak, plan, states, steps, stream, db, time.monotonic() - started)
    finally:
        await asyncio.to_thread(soak.stop_stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worksets", type=int, default=300)
    parser.add_argument("--rate", type=float, default=1.5, help="worksets submitted per second")
    parser.add_argument("--slots", type=int, default=20, help="worksets running at once (the limit)")
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--nats-outage", type=float, default=30.0)
    parser.add_argument("--pg-outage", type=float, default=120.0)
    parser.add_argument("--duplicates", type=int, default=20)
    parser.add_argument("--malformed", type=int, default=16)
    parser.add_argument("--fault-gap", type=float, default=30.0, help="quiet seconds after each outage")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for every workset to end")
    parser.add_argument("--control", action="store_true", help="the same load, no faults")
    parser.add_argument(
        "--pair",
        action="store_true",
        help="the faults run, then its control right after (a fresh stack each)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it (logs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    bench_process()
    if not args.pair:
        figures, verdict = run_one(args)
        print(json.dumps(figures, indent=2, default=str) if args.json else verdict)
        return 0 if figures["ok"] else 1
    faults, faults_verdict = run_one(argparse.Namespace(**{**vars(args), "control": False}))
    control, control_verdict = run_one(argparse.Namespace(**{**vars(args), "control": True}))
    ratio = {
        key: round(faults[key]["p50"] / control[key]["p50"], 2) if control[key]["p50"] else None
        for key in ("latency_seconds", "client_latency_seconds")
    }
    if args.json:
        print(json.dumps({"faults": faults, "control": control, "p50_ratio": ratio}, indent=2, default=str))
    else:
        print(f"faults:  {faults_verdict}\ncontrol: {control_verdict}")
        print(
            f"p50 faults/control: {ratio['latency_seconds']} (client view {ratio['client_latency_seconds']})"
        )
    return 0 if faults["ok"] and control["ok"] else 1


def run_one(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.control:
        args.kills = args.duplicates = args.malformed = 0
        args.nats_outage = args.pg_outage = 0.0
    if args.keep:
        folder = args.keep / ("control" if args.control else "faults") if args.pair else args.keep
        folder.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, folder.resolve()))
    with tempfile.TemporaryDirectory(prefix="stamen-soak-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
