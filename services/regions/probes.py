"""Probes: one check of one thing a region needs, timed, never raising.

Each probe keeps its connection between rounds (a probe measures a round trip, not a handshake) and
opens a new one after a failure. Every call is bounded by the probe timeout; a timeout is a failure.

Bounded means `within`, not `asyncio.wait_for`: on a timeout, wait_for cancels the call and then waits
for it to end, and a client that does not end when cancelled (closing a NATS or asyncpg connection to a
server that vanished can wait on it: MagicStack/asyncpg#1326) would hold the round, and with it the
region's health, forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aioboto3  # type: ignore[import-untyped]  # aioboto3 ships no type information
import asyncpg
import nats
from botocore.config import Config
from nats.aio.client import Client as NATS

from stamen.domain.regions import ProbeKind, ProbeResult
from stamen.executors.remote import runner_for_cluster
from stamen.store.clusters import ClusterRecord

T = TypeVar("T")


async def within(call: Awaitable[T], seconds: float) -> T:
    """`call`'s result, or TimeoutError after `seconds`; on a timeout `call` is cancelled and left to
    end by itself, never waited for."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError
    return task.result()


def _consume(task: asyncio.Future[Any]) -> None:
    """An abandoned call's outcome, read so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class Probe(Protocol):
    kind: ProbeKind
    target: str

    async def prepare(self) -> None:
        """Build what needs no network and may block a while (an AWS client), once, before any round."""
        ...

    async def connect(self) -> None:
        """Open the probe's connection if it has none (not part of the measured latency)."""
        ...

    async def check(self) -> dict[str, Any]:
        """Raise if the thing is not usable; return facts worth keeping (role, lag)."""
        ...

    async def reset(self) -> None:
        """After a failure: drop a connection that may be broken (the next round opens a new one)."""
        ...

    async def close(self) -> None: ...


async def run_probe(probe: Probe, timeout: float) -> ProbeResult:
    """Connect if needed, then time one check; both within `timeout`. The latency is the check's round
    trip only: a handshake (TLS, authentication) after a reconnect would not say how far the region is."""
    deadline = time.monotonic() + timeout
    try:
        await within(probe.connect(), timeout)
        started = time.perf_counter()
        facts = await within(probe.check(), max(0.001, deadline - time.monotonic()))
    except TimeoutError:
        await _reset(probe, timeout)  # a half-open connection would time out again
        return ProbeResult(probe.kind, probe.target, False, None, f"no answer within {timeout:g}s")
    except Exception as exc:
        await _reset(probe, timeout)
        return ProbeResult(probe.kind, probe.target, False, None, _short(exc))
    latency = (time.perf_counter() - started) * 1000.0
    return ProbeResult(probe.kind, probe.target, True, round(latency, 3), str(facts.pop("detail", "")), facts)


async def _reset(probe: Probe, timeout: float) -> None:
    """Bounded too: closing a connection to a server that vanished can wait on it (a NATS client flushes)."""
    with contextlib.suppress(Exception):
        await within(probe.reset(), timeout)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class S3Probe:
    """HEAD the region's control bucket."""

    kind = ProbeKind.S3

    def __init__(self, bucket: str, endpoint_url: str | None, region: str, timeout: float) -> None:
        self.target = bucket
        self._bucket = bucket
        self._endpoint_url = endpoint_url
        self._region = region
        self._config = Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1, "mode": "standard"}
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def prepare(self) -> None:
        # Creating a client loads botocore's service models: slow, and it blocks the event loop, so it
        # is done once, before the rounds, and kept (its HTTP pool reconnects by itself).
        if self._client is None:
            self._stack = contextlib.AsyncExitStack()
            session = aioboto3.Session()
            self._client = await self._stack.enter_async_context(
                session.client(
                    "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=self._config
                )
            )

    async def connect(self) -> None:
        await self.prepare()

    async def check(self) -> dict[str, Any]:
        await self._client.head_bucket(Bucket=self._bucket)
        return {}

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


class NatsProbe:
    """A PING/PONG round trip to the region's own NATS servers (not the cluster's others)."""

    kind = ProbeKind.NATS

    def __init__(self, servers: list[str], timeout: float, shown_as: str) -> None:
        self.target = shown_as
        self._servers = servers
        self._timeout = timeout
        self._nc: NATS | None = None

    async def prepare(self) -> None:
        return None

    async def reset(self) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            await self.close()

            async def quiet(_: Exception) -> None:  # failures are reported by the probe result
                return None

            self._nc = await nats.connect(
                self._servers,
                name="stamen-regions-probe",
                allow_reconnect=False,  # reconnecting would reach another region's node and hide this one's loss
                connect_timeout=self._timeout,  # type: ignore[arg-type,unused-ignore]  # a float works (asyncio.wait_for)
                error_cb=quiet,
            )

    async def check(self) -> dict[str, Any]:
        assert self._nc is not None
        await self._nc.flush(timeout=self._timeout)  # type: ignore[arg-type]  # as above
        return {
            "server": str(self._nc.connected_url.netloc.rsplit("@", 1)[-1]) if self._nc.connected_url else ""
        }

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await within(nc.close(), self._timeout)


# One query tells the role, whether writes are refused, and (on a primary) each standby's lag.
POSTGRES_STATE = """
SELECT pg_is_in_recovery() AS standby,
       current_setting('transaction_read_only') = 'on' AS read_only,
       current_setting('synchronous_standby_names') AS sync_names,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text AS lsn,
       (SELECT coalesce(json_agg(json_build_object(
                   'name', application_name, 'state', state, 'sync_state', sync_state,
                   'replay_lag_seconds', coalesce(extract(epoch FROM replay_lag), 0),
                   'lag_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))), '[]'::json)
          FROM pg_stat_replication) AS standbys
"""


class PostgresProbe:
    """A query on the region's PostgreSQL server: its role, and its standbys' lag when it is a primary."""

    kind = ProbeKind.POSTGRES

    def __init__(self, dsn: str, shown_as: str, timeout: float) -> None:
        self.target = shown_as
        self._dsn = dsn
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def prepare(self) -> None:
        return None

    async def reset(self) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout)

    async def check(self) -> dict[str, Any]:
        assert self._conn is not None
        row = await self._conn.fetchrow(POSTGRES_STATE)
        assert row is not None
        role = "standby" if row["standby"] else "primary"
        return {
            "role": role,
            "read_only": bool(row["read_only"]),
            "sync_names": row["sync_names"],
            "lsn": row["lsn"],
            "standbys": json.loads(row["standbys"]) if not row["standby"] else [],
            "detail": role + (" (fenced: read-only)" if row["read_only"] and role == "primary" else ""),
        }

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


class ClusterProbe:
    """A cluster's head: `scontrol ping` for Slurm (over SSH for a remote head node); for a local
    cluster, whose head is this machine, its work folder must be writable."""

    kind = ProbeKind.CLUSTER

    def __init__(self, cluster: ClusterRecord, timeout: float) -> None:
        self.target = cluster.name
        self._cluster = cluster
        self._timeout = timeout
        self._check: Callable[[], Awaitable[dict[str, Any]]] = (
            self._slurm if cluster.executor == "slurm" else self._local
        )
        self._runner = runner_for_cluster(cluster.config or {}) if cluster.executor == "slurm" else None

    async def prepare(self) -> None:
        return None

    async def connect(self) -> None:
        return None  # each check runs its own command

    async def reset(self) -> None:
        return None

    async def check(self) -> dict[str, Any]:
        return await self._check()

    async def _slurm(self) -> dict[str, Any]:
        assert self._runner is not None
        result = await self._runner.run(["scontrol", "ping"], timeout=self._timeout)
        if not result.succeeded or "UP" not in result.stdout:
            raise RuntimeError(
                (result.stdout + result.stderr).strip() or f"scontrol ping exited {result.returncode}"
            )
        return {"detail": result.stdout.strip().splitlines()[0]}

    async def _local(self) -> dict[str, Any]:
        root = Path(str((self._cluster.config or {}).get("workdir_root") or "."))

        def writable() -> None:
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK):
                raise PermissionError(f"{root} is not writable")

        await asyncio.to_thread(writable)
        return {"detail": f"work folder {root}"}

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
