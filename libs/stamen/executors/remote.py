"""How an executor reaches a cluster's head node: run a command there, read and write small files.

`LocalCommandRunner` runs commands here (the scheduler is on the head node, or the cluster's client
commands work from this machine). `SshCommandRunner` runs them on a remote head node (e.g. an AWS
ParallelCluster head node) over one SSH connection, with the server's host key checked against a
known_hosts file: there is no way to turn that check off.

Both take argv lists, never shell strings from callers: the SSH runner quotes them with `shlex.join`
for the remote login shell.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # asyncssh is imported lazily: only the SSH runner needs it
    import asyncssh

DEFAULT_COMMAND_TIMEOUT_SECONDS = 60.0


class CommandRunnerError(Exception):
    """The runner could not run a command at all (binary missing, SSH connection failed, timeout).

    A command that ran and exited non-zero is not an error of the runner: see `CommandResult`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0


class CommandRunner(Protocol):
    """Runs commands and touches files on the machine where the cluster's client commands work."""

    description: str  # for messages: "local" or "ssh://user@host:port"

    async def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS
    ) -> CommandResult: ...

    async def make_dirs(self, path: str) -> None: ...

    async def write_file(self, path: str, content: str, *, executable: bool = False) -> None:
        """Write `content` to `path` atomically (a temporary file renamed over it)."""
        ...

    async def read_file_tail(self, path: str, max_bytes: int) -> bytes | None:
        """The last `max_bytes` of `path`, or None if it does not exist."""
        ...

    async def remove_file(self, path: str) -> None:
        """Remove `path`; no error if it does not exist."""
        ...

    async def close(self) -> None: ...


class LocalCommandRunner:
    """Runs commands as subprocesses of this process, with `env` added to this process's environment."""

    description = "local"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    async def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS
    ) -> CommandResult:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env},
            )
        except OSError as error:  # FileNotFoundError for a missing binary, PermissionError, ...
            raise CommandRunnerError(
                "COMMAND_NOT_RUNNABLE", f"cannot run {argv[0]!r} here: {error}"
            ) from error
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError as error:
            process.kill()
            await process.wait()
            raise CommandRunnerError(
                "COMMAND_TIMEOUT", f"{shlex.join(argv)} did not finish within {timeout:g} s"
            ) from error
        return CommandResult(
            argv=tuple(argv),
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )

    async def make_dirs(self, path: str) -> None:
        await asyncio.to_thread(Path(path).mkdir, parents=True, exist_ok=True)

    async def write_file(self, path: str, content: str, *, executable: bool = False) -> None:
        await asyncio.to_thread(_write_file_atomically, Path(path), content, executable)

    async def read_file_tail(self, path: str, max_bytes: int) -> bytes | None:
        return await asyncio.to_thread(_read_file_tail, Path(path), max_bytes)

    async def remove_file(self, path: str) -> None:
        await asyncio.to_thread(Path(path).unlink, missing_ok=True)

    async def close(self) -> None:
        return None


def _write_file_atomically(path: Path, content: str, executable: bool) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(content, encoding="utf-8")
    temporary.chmod(0o755 if executable else 0o644)
    temporary.replace(path)


def _read_file_tail(path: Path, max_bytes: int) -> bytes | None:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            return handle.read()
    except FileNotFoundError:
        return None


class SshCommandRunner:
    """Runs commands on a remote head node over one (re-used, re-opened if dropped) SSH connection.

    The server's host key must be in `known_hosts` (a file path): an unknown or changed key fails
    the connection. Authentication uses `client_keys` (private key files) or, when None, the SSH
    agent and the default keys in ~/.ssh, as OpenSSH would.
    """

    def __init__(
        self,
        host: str,
        *,
        known_hosts: str,
        username: str | None = None,
        port: int = 22,
        client_keys: Sequence[str] | None = None,
        connect_timeout: float = 30.0,
        keepalive_interval: float = 30.0,
    ) -> None:
        if not known_hosts:
            raise ValueError("SshCommandRunner needs a known_hosts file: host keys are always verified")
        self.host = host
        self.port = port
        self.username = username
        self.known_hosts = known_hosts
        self.client_keys = list(client_keys) if client_keys is not None else None
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        user = f"{username}@" if username else ""
        self.description = f"ssh://{user}{host}:{port}"
        self._connection: asyncssh.SSHClientConnection | None = None
        self._connect_lock = asyncio.Lock()

    async def _connect(self) -> asyncssh.SSHClientConnection:
        import asyncssh  # optional dependency: only this runner needs it

        async with self._connect_lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            if not await asyncio.to_thread(Path(self.known_hosts).is_file):
                raise CommandRunnerError(
                    "SSH_KNOWN_HOSTS_MISSING",
                    f"known_hosts file {self.known_hosts!r} does not exist: add the head node's host "
                    f"key to it (e.g. with ssh-keyscan, checking the fingerprint) before connecting",
                )
            options: dict[str, object] = {}
            if self.username is not None:  # else the local user name, or User from ~/.ssh/config
                options["username"] = self.username
            if self.client_keys is not None:  # else asyncssh's defaults: the agent, then ~/.ssh/id_*
                options["client_keys"] = self.client_keys
            try:
                self._connection = await asyncssh.connect(
                    self.host,
                    port=self.port,
                    known_hosts=self.known_hosts,
                    connect_timeout=self.connect_timeout,
                    keepalive_interval=self.keepalive_interval,
                    **options,
                )
            except asyncssh.HostKeyNotVerifiable as error:
                raise CommandRunnerError(
                    "SSH_HOST_KEY_NOT_VERIFIED",
                    f"{self.description}: the server's host key is not in {self.known_hosts!r} "
                    f"or does not match it: {error}",
                ) from error
            except (OSError, asyncssh.Error) as error:
                raise CommandRunnerError(
                    "SSH_CONNECT_FAILED", f"cannot connect to {self.description}: {error}"
                ) from error
            return self._connection

    async def run(
        self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS
    ) -> CommandResult:
        returncode, stdout, stderr = await self._execute(shlex.join(argv), timeout=timeout)
        return CommandResult(
            argv=tuple(argv),
            returncode=returncode,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )

    async def _execute(
        self, command: str, *, timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS, stdin: bytes | None = None
    ) -> tuple[int, bytes, bytes]:
        """Run `command` in the remote login shell: (exit status, stdout, stderr) as bytes."""
        import asyncssh

        connection = await self._connect()
        try:
            if stdin is None:  # no input: the command reads end-of-file, as with `ssh -n`
                completed = await connection.run(
                    command, stdin=asyncssh.DEVNULL, encoding=None, check=False, timeout=timeout
                )
            else:
                completed = await connection.run(
                    command, input=stdin, encoding=None, check=False, timeout=timeout
                )
        except asyncssh.TimeoutError as error:
            raise CommandRunnerError(
                "COMMAND_TIMEOUT", f"{self.description}: {command} did not finish within {timeout:g} s"
            ) from error
        except (OSError, asyncssh.Error) as error:
            self._connection = None  # re-connect on the next call
            raise CommandRunnerError(
                "SSH_COMMAND_FAILED", f"{self.description}: cannot run {command}: {error}"
            ) from error
        returncode = completed.returncode if completed.returncode is not None else -1
        return returncode, _as_bytes(completed.stdout), _as_bytes(completed.stderr)

    async def _execute_checked(self, command: str, *, stdin: bytes | None = None) -> bytes:
        returncode, stdout, stderr = await self._execute(command, stdin=stdin)
        if returncode != 0:
            raise CommandRunnerError(
                "SSH_FILE_OPERATION_FAILED",
                f"{self.description}: {command} exited {returncode}: {stderr.decode(errors='replace').strip()}",
            )
        return stdout

    async def make_dirs(self, path: str) -> None:
        await self._execute_checked(f"mkdir -p -- {shlex.quote(path)}")

    async def write_file(self, path: str, content: str, *, executable: bool = False) -> None:
        target = shlex.quote(path)
        temporary = shlex.quote(f"{path}.stamen-tmp")
        mode = "755" if executable else "644"
        await self._execute_checked(
            f"cat > {temporary} && chmod {mode} {temporary} && mv -f -- {temporary} {target}",
            stdin=content.encode(),
        )

    async def read_file_tail(self, path: str, max_bytes: int) -> bytes | None:
        quoted = shlex.quote(path)
        # Exit 3 tells "no such file" apart from a failing tail.
        returncode, stdout, stderr = await self._execute(
            f"if [ -e {quoted} ]; then tail -c {int(max_bytes)} -- {quoted}; else exit 3; fi"
        )
        if returncode == 3:
            return None
        if returncode != 0:
            raise CommandRunnerError(
                "SSH_FILE_OPERATION_FAILED",
                f"{self.description}: cannot read {path}: {stderr.decode(errors='replace').strip()}",
            )
        return stdout

    async def remove_file(self, path: str) -> None:
        await self._execute_checked(f"rm -f -- {shlex.quote(path)}")

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            await self._connection.wait_closed()
            self._connection = None


def _as_bytes(output: str | bytes | None) -> bytes:
    if output is None:
        return b""
    return output if isinstance(output, bytes) else output.encode()


def runner_for_cluster(config: Mapping[str, object]) -> CommandRunner:
    """The runner a Slurm cluster's registry config asks for: `ssh` (a remote head node; host keys
    always verified) or commands run here, with `slurm_conf` as SLURM_CONF when given."""
    ssh = config.get("ssh")
    if isinstance(ssh, Mapping) and ssh:
        keys = ssh.get("client_keys")
        return SshCommandRunner(
            host=str(ssh["host"]),
            known_hosts=str(ssh["known_hosts"]),
            username=str(ssh["username"]) if ssh.get("username") else None,
            port=int(str(ssh.get("port", 22))),
            client_keys=[str(k) for k in keys] if isinstance(keys, list | tuple) else None,
        )
    slurm_conf = config.get("slurm_conf")
    return LocalCommandRunner({"SLURM_CONF": str(slurm_conf)} if slurm_conf else None)
