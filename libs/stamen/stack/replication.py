"""Replicated servers from the same wheels, on loopback: one node per region.

- `NatsCluster`: nats-server nodes joined in one cluster by routes; each carries the tag
  `region:<name>` (and `stamen:lifecycle`), and JetStream's `unique_tag: "region:"` puts the replicas of
  an R3 stream in three different regions, so losing a region loses no acknowledged event.
- `PostgresNode`: a PostgreSQL server that is a primary (initdb) or a streaming standby of one
  (pg_basebackup), and that rejoins as a standby after a failover (pg_rewind). Replication, promotion
  and rewind are PostgreSQL's own; stamen only runs the binaries the pgserver wheel ships.
- `start_under_leader`: how a node starts: as the primary only if the leader record (in JetStream's
  key-value store, `stamen.regions.leader`) names it; otherwise rewound and started as a standby of the
  node it names. This is the fencing that keeps a returning old primary from accepting writes.

Production runs none of this (see docs/multi-region.md): a NATS supercluster or stretched cluster,
and RDS/Aurora or Patroni.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

from stamen.regions.leader import LeaderStore
from stamen.stack.ports import free_port
from stamen.stack.servers import ManagedServer, PostgresServer, ServerStartError, _tail, _wait_tcp, _which

LIFECYCLE_TAG = "stamen:lifecycle"
REPLICATION_MARK = "# stamen: replication settings (stamen.stack.replication)"


class NatsClusterNode(ManagedServer):
    def __init__(
        self,
        data_dir: Path,
        *,
        region: str,
        port: int,
        cluster_port: int,
        monitor_port: int,
        routes: Sequence[int],
        cluster_name: str = "stamen",
        tags: Sequence[str] = (LIFECYCLE_TAG,),
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__("nats", data_dir)
        self.region = region
        self.port = port
        self.cluster_port = cluster_port
        self.monitor_port = monitor_port
        self.routes = list(routes)
        self.cluster_name = cluster_name
        self.tags = [f"region:{region}", *tags]
        self.user = user
        self.password = password

    @property
    def url(self) -> str:
        auth = f"{self.user}:{self.password}@" if self.user else ""
        return f"nats://{auth}127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        lines = [
            f"server_name: {json.dumps(self.region)}",
            'host: "127.0.0.1"',
            f"port: {self.port}",
            f"http_port: {self.monitor_port}",
            f"server_tags: {json.dumps(self.tags)}",
            # unique_tag: the replicas of one stream go to servers with different region tags.
            f'jetstream {{ store_dir: {json.dumps(str(self.data_dir / "jetstream"))}, unique_tag: "region:" }}',
            "cluster {",
            f"  name: {json.dumps(self.cluster_name)}",
            '  host: "127.0.0.1"',
            f"  port: {self.cluster_port}",
            f"  routes: {json.dumps([f'nats-route://127.0.0.1:{p}' for p in self.routes])}",
            "}",
        ]
        if self.user:
            lines.append(
                f"authorization {{ user: {json.dumps(self.user)}, password: {json.dumps(self.password)} }}"
            )
        config = self.data_dir / "nats.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def spawn(self) -> None:
        self.proc = self._spawn([_which("nats-server"), "--config", str(self.write_config())])

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        _wait_tcp("127.0.0.1", self.port, deadline, self.proc, f"nats-server {self.region}", self.log_path)
        # Full health: JetStream enabled, the meta group has a leader and this server is current.
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise ServerStartError(
            f"nats-server {self.region} not healthy in time; see {self.log_path}:\n{_tail(self.log_path)}"
        )

    def start(self, timeout: float = 30.0) -> NatsClusterNode:
        self.spawn()
        self.wait_ready(time.monotonic() + timeout)
        return self

    def kill(self) -> None:
        """As a region outage would: SIGKILL, no goodbye to the cluster or the clients."""
        kill_group(self)


class NatsCluster:
    """One nats-server per region, all routed to each other."""

    def __init__(
        self, root: Path, regions: Sequence[str], *, user: str | None = None, password: str | None = None
    ) -> None:
        ports = {r: (free_port(), free_port(), free_port()) for r in regions}
        cluster_ports = [p[1] for p in ports.values()]
        self.nodes = {
            r: NatsClusterNode(
                root / f"nats-{r}",
                region=r,
                port=ports[r][0],
                cluster_port=ports[r][1],
                monitor_port=ports[r][2],
                routes=[p for p in cluster_ports if p != ports[r][1]],
                user=user,
                password=password,
            )
            for r in regions
        }

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes.values():  # all at once: JetStream needs a quorum to elect its meta leader
            node.spawn()
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            node.wait_ready(deadline)
        return self

    @property
    def url(self) -> str:
        """Every node, comma-separated (NATS_URL): a client starts with whichever answers."""
        return ",".join(n.url for n in self.nodes.values())

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


class PostgresNode(PostgresServer):
    """A PostgreSQL server in a primary/standby pair; `name` is its region (and application_name)."""

    def __init__(
        self, data_dir: Path, *, name: str, port: int | None = None, database: str = "stamen"
    ) -> None:
        super().__init__(data_dir, port=port or free_port(), database=database)
        self.name = name
        self.extra_settings = {
            "wal_level": "replica",
            "wal_log_hints": "on",  # pg_rewind needs it
            "max_wal_senders": "10",
            "hot_standby": "on",
            "wal_keep_size": "512MB",  # WAL a returning node needs to catch up after a rewind
            "cluster_name": name,
        }

    def start(self, timeout: float = 60.0) -> PostgresNode:
        super().start(timeout)
        self.preferred_port = self.port  # the DSN names this port: keep it across restarts
        self._write_replication_settings()
        return self

    def _write_replication_settings(self) -> None:
        """The replication settings in postgresql.conf too, not only as -c flags: pg_rewind runs a crashed
        node's recovery itself (single-user mode, no flags), and must find wal_log_hints on afterwards."""
        conf = self.pgdata / "postgresql.conf"
        text = conf.read_text()
        if REPLICATION_MARK in text:
            return
        static = {
            k: v for k, v in self.extra_settings.items() if k != "cluster_name"
        }  # per node: a flag only
        lines = [f"{k} = '{v}'" for k, v in static.items()]
        conf.write_text(text + f"\n{REPLICATION_MARK}\n" + "\n".join(lines) + "\n")

    def _bin(self, name: str) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
        return str(Path(POSTGRES_BIN_PATH) / name)

    def _conninfo(self, host: str, port: int) -> str:
        return f"host={host} port={port} user=postgres dbname=postgres application_name={self.name}"

    def _tool(self, argv: list[str], what: str) -> str:
        as_user = self._run_as()
        result = subprocess.run(argv, capture_output=True, check=False, **as_user)  # type: ignore[call-overload]
        out = (result.stdout + result.stderr).decode(errors="replace")
        if result.returncode != 0:
            raise ServerStartError(f"{what} failed (exit {result.returncode}): {out.strip()}")
        return str(out)

    def clone_from(self, host: str, port: int, timeout: float = 120.0) -> PostgresNode:
        """A new standby: a base backup of the primary, streaming from it (-R writes primary_conninfo)."""
        if (self.pgdata / "PG_VERSION").exists():
            raise ServerStartError(
                f"{self.pgdata} already holds a database; a standby starts from an empty folder"
            )
        self._run_as()  # the data folder belongs to the server's user before pg_basebackup writes into it
        self._tool(
            [self._bin("pg_basebackup"), "-D", str(self.pgdata), "-d", self._conninfo(host, port),
             "-X", "stream", "-R", "-c", "fast"],
            "pg_basebackup",
        )  # fmt: skip
        return self.start(timeout)

    def rejoin(self, host: str, port: int, timeout: float = 120.0) -> str:
        """Start as a standby of the primary at host:port, rewinding whatever this node wrote after the
        timelines split (a crashed old primary: pg_rewind runs its crash recovery first)."""
        self.stop()
        self._clear_stale_pid_file()  # a SIGKILLed postmaster leaves it; pg_rewind's crash recovery would refuse
        output = self._tool(
            [
                self._bin("pg_rewind"),
                "-D",
                str(self.pgdata),
                "--source-server",
                self._conninfo(host, port),
                "-R",
            ],
            "pg_rewind",
        )
        # -R writes standby.signal and primary_conninfo when a rewind was done; make sure of both when
        # none was needed, so the node never comes back as a primary.
        (self.pgdata / "standby.signal").touch()
        auto = self.pgdata / "postgresql.auto.conf"
        lines = [ln for ln in auto.read_text().splitlines() if not ln.startswith("primary_conninfo")]
        auto.write_text("\n".join([*lines, f"primary_conninfo = '{self._conninfo(host, port)}'"]) + "\n")
        self.start(timeout)
        return output.strip()

    def kill(self) -> None:
        """As a region outage would: the postmaster and every backend at once, with SIGKILL."""
        kill_group(self)

    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"


def kill_group(server: ManagedServer) -> None:
    if server.proc is None or server.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)  # started with start_new_session: its own group
    server.proc.wait(10)


async def start_under_leader(node: PostgresNode, store: LeaderStore) -> str:
    """Start `node` as the leader record says: "primary" if it names this node, else "standby" of the
    node it names (rewound first). With no record, or no way to read it, the node does not start:
    it cannot know that it is still the primary."""
    entry = await store.get()
    if entry is None:
        raise ServerStartError(
            f"no primary is recorded in the leader store; {node.name} will not start without knowing its role"
        )
    if entry.leader.node == node.name:
        await asyncio.to_thread(node.start)
        return "primary"
    await asyncio.to_thread(node.rejoin, entry.leader.host, entry.leader.port)
    return "standby"
