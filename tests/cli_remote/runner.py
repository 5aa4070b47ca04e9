"""Run `stamen` as a user does: a subprocess, configured only by its environment.

The portal under test runs in this test's event loop, so the CLI is awaited, never waited for blocking."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Whatever the developer's shell has set must not leak into the commands under test.
_CLEARED = ("STAMEN_URL", "STAMEN_TOKEN", "STAMEN_API_KEY", "STAMEN_CONFIG_DIR", "XDG_CONFIG_HOME")


@dataclass
class Run:
    args: tuple[str, ...]
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except json.JSONDecodeError:
            raise AssertionError(
                f"not JSON from stamen {' '.join(self.args)}:\n{self.out}\n{self.err}"
            ) from None

    def __str__(self) -> str:
        return f"stamen {' '.join(self.args)} -> {self.rc}\nstdout: {self.out}\nstderr: {self.err}"


def cli_env(config_dir: Path, **values: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["STAMEN_CONFIG_DIR"] = str(config_dir)
    env.update({k: v for k, v in values.items() if v is not None})
    return env


async def stamen(env: dict[str, str], *args: str, stdin: str = "") -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stamen",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=120)
    assert proc.returncode is not None
    return Run(args, proc.returncode, out.decode(), err.decode())
