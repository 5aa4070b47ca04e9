"""Starting local runners cheaply: a fork server that has the runner loaded and forks one per step.

Starting `python -m stamen.executors.local_runner` for every step costs a Python interpreter start
(~50 ms of CPU, far more than a short step). Instead, each process that submits local steps starts
one small fork server (`python -m stamen.executors.local_forkserver`, its child, which imports only
the runner) and asks it over a pipe, one JSON line per step, to fork a runner (the asking side is
`local_forkserver_client.py`). The forked runner
starts a session of its own and runs `run_runner` exactly as the standalone runner would, so it
outlives the scheduler and the fork server; the fork server writes the runner's job file before the
runner may start the command and before it answers, reaps runners as they end (no zombies) and exits
when its stdin closes (the submitting process ended).

Requests: {"config": RunnerConfig.to_json(), "log": "<step>.runner.log"}
Replies:   {"pid": <runner pid>, "start_time": "<clock ticks since boot>"} or {"error": "..."}
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from stamen.executors.local_files import job_document, write_json_atomically
from stamen.executors.local_proc import boot_id, process_start_time
from stamen.executors.local_runner import record_runner_failure, run_runner
from stamen.executors.local_runner_config import RunnerConfig

# What this process imports is what every runner it forks pays for: a forked child runs the
# interpreter's at-fork hooks and copies every page it writes. `threading` (which `subprocess` imports)
# alone adds an at-fork hook that cost each runner ~0.4 ms of CPU (140 more page copies), so the
# client side, which needs both, is a module of its own.


class ForkServerError(RuntimeError):
    """The fork server could not start a runner, or stopped answering."""


# --- the server (its own process) -----------------------------------------------------------------


def _reap_runners(_signum: int = 0, _frame: FrameType | None = None) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _become_runner(config: RunnerConfig, log: Path, go: int) -> NoReturn:
    """In the forked child: detach, wait for the server's go (the job file is written), run the step,
    never return. No go (the server died first): exit, run nothing.

    Its stdio is /dev/null: the runner log is created only if the runner itself fails (its traceback),
    not for every step (creating a file is the dearest thing a runner does: ~0.15 ms of CPU on ext4)."""
    code = 1
    try:
        gc.disable()  # a runner lives briefly and allocates little; a collection would only copy pages
        os.setsid()  # its own session: a signal to the scheduler's group does not reach it
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir(config.workdir)
        os.umask(0o077)  # the step's files (staged reads, results, logs) are its tenant's: owner-only
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # Nothing else of the server's (its pipes to the scheduler) stays open in a runner.
        os.closerange(3, go)
        os.closerange(go + 1, 65536)
        if os.read(go, 1) == b"1":
            os.close(go)
            code = run_runner(config)
        else:
            code = 0
    except BaseException:
        record_runner_failure(config, log)
    finally:
        os._exit(code)


def _fork_runner(request: dict[str, Any]) -> dict[str, Any]:
    """Fork the runner, write its job file (naming its pid), then let it start the command. The job
    file exists before the command does and before the executor hears the pid, so a submission whose
    command started can always be found, whoever dies when."""
    config = RunnerConfig.from_json(request["config"])
    log = Path(request["log"])
    submission = config.submission
    if config.job_file is None or submission is None:
        raise ForkServerError("a runner needs its job file and submission (workset, attempt, step)")
    # SIGCHLD blocked until the start time is read: a runner that ended at once is not reaped (and
    # its pid reused) before we could name it.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    try:
        wait_for_go, go = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go)
            _become_runner(config, log, wait_for_go)
        os.close(wait_for_go)
        try:
            start_time = process_start_time(pid)
            if start_time is None:
                raise ForkServerError(f"runner {pid} vanished right after it was forked")
            write_json_atomically(
                config.job_file,
                job_document(
                    workset_id=submission.workset_id, attempt=submission.attempt, step=submission.step,
                    submitted_at=submission.submitted_at, runner_pid=pid, runner_start_time=start_time,
                    boot=boot_id(),
                ),
                durable=False,  # see local_runner._write_job_file
            )  # fmt: skip
            os.write(go, b"1")
        finally:
            os.close(go)  # without the go the runner exits and runs nothing
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
    return {"pid": pid, "start_time": start_time}


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    boot_id()  # read once here, inherited by every runner
    gc.freeze()  # what is loaded now stays shared with the runners (not copied by their collections)
    signal.signal(signal.SIGCHLD, _reap_runners)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the scheduler; we end with our stdin
    for line in requests:
        try:
            reply = _fork_runner(json.loads(line))
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()
    _reap_runners()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
