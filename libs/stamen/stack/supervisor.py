"""Runs each service as its own process, and the embedded servers, and restarts whatever dies.

Services are restarted from the launcher's loop (`Supervisor.check`); each gets the listening socket the
launcher made for it, so its port is its own and the same after every restart. Servers (PostgreSQL,
NATS, moto) are each watched by a thread of their own (`ServerWatch`), since starting one takes seconds:
a dead one is reaped and started again on the same port and data folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from stamen.stack.exits import Wakeup, wait_for_exits
from stamen.stack.servers import ManagedServer

log = structlog.get_logger(__name__)

SERVICES: tuple[str, ...] = ("validator", "scheduler", "diagnostics", "notifier", "regions", "portal")


@dataclass
class RestartPolicy:
    """How long to wait before starting a process that died. Each death adds one to a score that halves
    for every `half_life_seconds` the process stayed up before it; the delay is
    `initial_seconds * 2 ** (score - 1)`, at most `cap_seconds`. A process that dies right after each
    start climbs to the cap (it does not spin); one killed now and then, however often before, comes back
    after about the initial delay."""

    initial_seconds: float = 0.5
    cap_seconds: float = 30.0
    half_life_seconds: float = 10.0
    score: float = 0.0

    def died(self, uptime_seconds: float) -> float:
        """The process died after `uptime_seconds` up: the delay before it is started again."""
        self.score = self.score * 0.5 ** (max(0.0, uptime_seconds) / self.half_life_seconds) + 1.0
        return min(self.cap_seconds, self.initial_seconds * 2 ** (self.score - 1.0))


@dataclass
class SupervisedProcess:
    name: str  # the instance: "scheduler", "scheduler-2", ...
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    # The listening socket the launcher holds for it (passed down as STAMEN_HTTP_FD).
    sock: socket.socket | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start_at: float = 0.0
    started_at: float = 0.0
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    history: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        fds: tuple[int, ...] = ()
        if self.sock is not None:
            fds = (self.sock.fileno(),)
            env["STAMEN_HTTP_FD"] = str(self.sock.fileno())
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=fds
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Restarts dead services after RestartPolicy's delay (a crash loop backs off to 30 s; a service
    killed now and then is back within about a second)."""

    def __init__(self, processes: list[SupervisedProcess]) -> None:
        self.processes = {p.name: p for p in processes}
        self._stopping = False

    def start_all(self) -> None:
        for p in self.processes.values():
            p.start()
            log.info("supervisor.started", service=p.name, pid=p.pid, port=p.port)

    def check(self) -> list[str]:
        """Restart what died; returns the names restarted by this call."""
        restarted = []
        now = time.monotonic()
        for p in self.processes.values():
            if self._stopping or p.alive:
                continue
            if p.next_start_at == 0.0:
                code = p.proc.returncode if p.proc else None
                ran_for = now - p.started_at
                delay = p.policy.died(ran_for)
                p.next_start_at = now + delay
                p.history.append(f"exited with {code} after {ran_for:.1f}s; restarting in {delay:.1f}s")
                log.warning(
                    "supervisor.service_died", service=p.name, exit_code=code, restart_in=round(delay, 2)
                )
            elif now >= p.next_start_at:
                p.next_start_at = 0.0
                p.restarts += 1
                p.start()
                restarted.append(p.name)
                log.info("supervisor.restarted", service=p.name, pid=p.pid, restarts=p.restarts)
        return restarted

    def wait(self, wakeup: Wakeup, poll: float) -> None:
        """Until a service ends, `wakeup` is set, or the next restart is due (a service killed is noticed
        at once, not at the next look)."""
        pending = [p.next_start_at for p in self.processes.values() if p.next_start_at]
        timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
        running = [
            p.proc for p in self.processes.values() if p.proc is not None and p.proc.returncode is None
        ]
        wait_for_exits(running, wakeup, timeout, poll)

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every service (each drains its consumers), then wait; SIGKILL what is left."""
        self._stopping = True
        for p in self.processes.values():
            if p.alive and p.proc is not None:
                p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.processes.values():
            if p.proc is None:
                continue
            try:
                p.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("supervisor.kill_after_timeout", service=p.name)
                p.proc.kill()
                p.proc.wait(5)
        for p in self.processes.values():
            if p.sock is not None:
                p.sock.close()


class ServerWatch:
    """Keeps one embedded server running: when its process ends (killed, crashed), the process is reaped
    and the server started again on the same port and data folder, after RestartPolicy's delay. A start
    that fails (the port still held, a stale lock) is tried again after the next delay."""

    POLL_SECONDS = 0.2  # how often a server without a pidfd (not Linux) is looked at

    def __init__(self, server: ManagedServer, on_restart: Callable[[], None] | None = None) -> None:
        self.server = server
        self.restarts = 0
        self.policy = RestartPolicy()
        self._on_restart = on_restart
        self._stop = threading.Event()
        self._wakeup = Wakeup()
        self._held_until = 0.0
        self._up_since = time.monotonic()
        self._thread = threading.Thread(target=self._main, name=f"watch-{server.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold_down(self, seconds: float) -> None:
        """Stop the server now (SIGKILL, as a crash would) and keep it down for `seconds`: an outage of
        a chosen length, for fault drills (bench/soak.py)."""
        self._held_until = time.monotonic() + seconds
        self.server.kill()

    def _main(self) -> None:
        while not self._stop.is_set():
            proc = self.server.proc
            if proc is not None and self.server.running:
                wait_for_exits([proc], self._wakeup, None, self.POLL_SECONDS)  # until it ends, or stop()
                continue
            code = self.server.proc.returncode if self.server.proc else None  # poll() reaped it
            delay = self.policy.died(time.monotonic() - self._up_since)
            delay = max(delay, self._held_until - time.monotonic())
            log.warning(
                "supervisor.server_died", server=self.server.name, exit_code=code, restart_in=round(delay, 2)
            )
            while not self._stop.wait(delay):
                try:
                    self.server.start()
                except Exception as exc:
                    self.server.kill()
                    delay = self.policy.died(0.0)
                    log.warning("supervisor.server_restart_failed", server=self.server.name, error=str(exc),
                                retry_in=round(delay, 2))  # fmt: skip
                    continue
                self.restarts += 1
                self._up_since = time.monotonic()
                log.info("supervisor.server_restarted", server=self.server.name, pid=self.server.proc and
                         self.server.proc.pid, port=self.server.port, restarts=self.restarts)  # fmt: skip
                if self._on_restart is not None:
                    self._on_restart()
                break

    def stop(self) -> None:
        """Stop watching (before the server is stopped on purpose)."""
        self._stop.set()
        self._wakeup.set()
        if self._thread.is_alive():
            self._thread.join(70)


def service_argv(name: str) -> list[str]:
    return [sys.executable, "-m", f"services.{name}"]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
