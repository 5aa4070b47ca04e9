"""Runs each service as its own process and restarts any that dies, with growing delays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SERVICES: tuple[str, ...] = ("validator", "scheduler", "diagnostics", "notifier", "regions", "portal")


@dataclass
class SupervisedProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start_at: float = 0.0
    started_at: float = 0.0
    history: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    # Restart delays grow while a service keeps dying soon after starting, so a broken service
    # does not spin; one that ran for a minute starts again at the first delay.
    RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    STABLE_AFTER_SECONDS = 60.0

    def __init__(self, processes: list[SupervisedProcess]) -> None:
        self.processes = {p.name: p for p in processes}
        self._stopping = False
        self._quick_failures: dict[str, int] = {p.name: 0 for p in processes}

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
                quick = self._quick_failures[p.name] if ran_for < self.STABLE_AFTER_SECONDS else 0
                delay = self.RESTART_DELAYS[min(quick, len(self.RESTART_DELAYS) - 1)]
                self._quick_failures[p.name] = quick + 1
                p.next_start_at = now + delay
                p.history.append(f"exited with {code} after {ran_for:.1f}s; restarting in {delay}s")
                log.warning("supervisor.service_died", service=p.name, exit_code=code, restart_in=delay)
            elif now >= p.next_start_at:
                p.next_start_at = 0.0
                p.restarts += 1
                p.start()
                restarted.append(p.name)
                log.info("supervisor.restarted", service=p.name, pid=p.pid, restarts=p.restarts)
        return restarted

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


def service_argv(name: str) -> list[str]:
    return [sys.executable, "-m", f"services.{name}"]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
