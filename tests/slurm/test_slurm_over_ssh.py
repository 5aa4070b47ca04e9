"""The Slurm executor driving the test cluster through `SshCommandRunner`, as it drives a remote head node.

The SSH server is asyncssh's, on 127.0.0.1 with its own host key: each command it is sent runs in
`sh -c` here with the test cluster's SLURM_CONF, like a login shell on a ParallelCluster head node.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobState
from stamen.executors.remote import CommandRunnerError, SshCommandRunner
from stamen.executors.slurm import SlurmExecutor
from stamen.executors.slurm_commands import SlurmCommandError
from tests.slurm.conftest import SlurmTestCluster
from tests.slurm.helpers import finished, wait_for

if TYPE_CHECKING:
    import asyncssh

asyncssh = pytest.importorskip("asyncssh")


@dataclass(frozen=True)
class SshHeadNode:
    port: int
    known_hosts: Path  # holds the server's real host key
    wrong_known_hosts: Path  # holds another key for the same host
    client_key: Path


@pytest.fixture(scope="module")
async def ssh_head_node(
    slurm_cluster: SlurmTestCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SshHeadNode]:
    keys = tmp_path_factory.mktemp("ssh")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    impostor_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key.write_private_key(str(keys / "id_ed25519"))
    (keys / "id_ed25519").chmod(0o600)
    command_env = {**os.environ, **slurm_cluster.env}

    async def run_command(process: asyncssh.SSHServerProcess[bytes]) -> None:
        stdin = await process.stdin.read()  # the client sends end-of-file (input or /dev/null)
        shell = await asyncio.create_subprocess_exec(
            "sh", "-c", process.command or "", env=command_env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await shell.communicate(stdin)
        process.stdout.write(stdout)
        process.stderr.write(stderr)
        process.exit(shell.returncode if shell.returncode is not None else 255)

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
        process_factory=run_command,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = keys / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    wrong_known_hosts = keys / "wrong_known_hosts"
    wrong_known_hosts.write_text(f"[127.0.0.1]:{port} {impostor_key.export_public_key().decode()}")
    try:
        yield SshHeadNode(port, known_hosts, wrong_known_hosts, keys / "id_ed25519")
    finally:
        server.close()
        await server.wait_closed()


def ssh_runner(head_node: SshHeadNode, known_hosts: Path) -> SshCommandRunner:
    return SshCommandRunner(
        "127.0.0.1",
        port=head_node.port,
        username="stamen",
        known_hosts=str(known_hosts),
        client_keys=[str(head_node.client_key)],
    )


async def test_submit_poll_and_cancel_over_ssh(ssh_head_node: SshHeadNode, tmp_path: Path) -> None:
    runner = ssh_runner(ssh_head_node, ssh_head_node.known_hosts)
    executor = SlurmExecutor(cluster="remote", runner=runner)
    try:
        step = StepSpec(
            workset_id="ws-ssh", attempt=2, step="fastqc", workdir=str(tmp_path / "remote-work"),
            argv=["bash", "-c", "echo 'report written'; echo 'warning: low quality' >&2; exit 5"],
        )  # fmt: skip
        handle = await executor.submit(step)
        assert (tmp_path / "remote-work" / "fastqc.slurm.sh").is_file()  # written through the runner

        status = await wait_for(executor, handle, finished)
        assert status.state is JobState.FAILED, status
        assert status.exit_code == 5
        assert "warning: low quality" in status.log_tail and "report written" in status.log_tail

        sleeper = await executor.submit(step.model_copy(update={"step": "sleeper", "argv": ["sleep", "300"]}))
        await executor.cancel(sleeper)
        cancelled = await wait_for(executor, sleeper, finished)
        assert cancelled.state is JobState.CANCELLED, cancelled
        assert "cancelled by stamen" in cancelled.reason
    finally:
        await runner.close()


async def test_unknown_host_key_is_refused(ssh_head_node: SshHeadNode) -> None:
    runner = ssh_runner(ssh_head_node, ssh_head_node.wrong_known_hosts)

    with pytest.raises(CommandRunnerError) as raised:
        await runner.run(["squeue", "--version"])

    assert raised.value.code == "SSH_HOST_KEY_NOT_VERIFIED"
    await runner.close()


def test_known_hosts_is_required() -> None:
    with pytest.raises(ValueError, match="known_hosts"):
        SshCommandRunner("head-node", known_hosts="")


async def test_find_over_ssh(ssh_head_node: SshHeadNode, tmp_path: Path) -> None:
    """A scheduler that died after sbatch finds the job again through the head node."""
    runner = ssh_runner(ssh_head_node, ssh_head_node.known_hosts)
    held = SlurmExecutor(cluster="remote", runner=runner, extra_sbatch_args=["--hold"])
    executor = SlurmExecutor(cluster="remote", runner=runner)
    step = StepSpec(workset_id=f"ws-ssh-{uuid.uuid4().hex[:12]}", attempt=3, step="bwa",
                    workdir=str(tmp_path / "remote-work"), argv=["echo", "never"])  # fmt: skip
    try:
        # An exit file the head node cannot read is "cannot tell" (a real failure: it is a directory).
        exit_file = Path(SlurmExecutor.step_files(step.workdir, step.step)["exit_file"])
        await asyncio.to_thread(exit_file.mkdir, parents=True)
        with pytest.raises(SlurmCommandError) as raised:
            await executor.find(step)
        assert raised.value.code == "SLURM_EXIT_FILE_UNREADABLE" and runner.description in str(raised.value)
        await asyncio.to_thread(exit_file.rmdir)
        assert await executor.find(step) is None  # never submitted
        handle = await held.submit(step)
        found = await executor.find(step)
        assert found is not None and found.job_id == handle.job_id
        assert found.model_dump(exclude={"submitted_at"}) == handle.model_dump(exclude={"submitted_at"})
        assert await executor.find(step.model_copy(update={"attempt": 2})) is None
        await executor.cancel(found)
        assert (await wait_for(executor, found, finished)).state is JobState.CANCELLED
    finally:
        await runner.close()
