"""Starting local runners cheaply: a fork server that has the runner loaded and forks one per step.

Starting `python -m stamen.executors.local_runner` for every step costs a Python interpreter start
(~50 ms of CPU, far more than a short step). Instead, each process that submits local steps starts
one small fork server (`python -I -S -c ...local_forkserver import main...`, its child, which imports
only the runner) and asks it over a pipe, one JSON line per step, to fork a runner (the asking side is
`local_forkserver_client.py`). The forked runner starts a session of its own, writes its job file
and only then tells the fork server its start time and runs `run_runner` exactly as the standalone
runner would, so it outlives the scheduler and the fork server. The fork server answers once the job
file is written, reaps runners as they end (no zombies) and exits when its stdin closes (the
submitting process ended).

The fork server itself does as little as it can per step: every page it writes while a runner it
forked still lives is copied (copy-on-write), so the work of a step (its config, its job file) is the
runner's, which copies those pages anyway.

Requests: {"config": RunnerConfig.to_json(), "log": "<step>.runner.log"}
Replies:   {"pid": <runner pid>, "start_time": "<clock ticks since boot>"} or {"error": "..."}

The request is parsed here, before the fork: parsed in the runner instead, it cost the runner ~40 page
copies and ~0.2-0.3 ms of CPU more than it saved the server (~0.1 ms).

It runs in an isolated interpreter without `site` (`python -I -S`, the folder of the stamen package
alone on its path) and loads no module a runner does not need: a smaller process is cheaper to fork
and for each runner to end (15.0 -> 13.6 MB, ~10 fewer page copies per runner, the server's CPU per
step 0.50-0.55 -> 0.47-0.53 ms).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from types import FrameType
from typing import IO, Any, NoReturn

from stamen.executors.local_proc import boot_id
from stamen.executors.local_runner import record_runner_failure, run_runner, write_job_file
from stamen.executors.local_runner_config import RunnerConfig

# What this process imports is what every runner it forks pays for: a forked child runs the
# interpreter's at-fork hooks and copies every page it writes. `threading` (which `subprocess` imports)
# alone adds an at-fork hook that cost each runner ~0.4 ms of CPU (140 more page copies), so the
# client side, which needs both, is a module of its own.


class ForkServerError(RuntimeError):
    """The fork server could not start a runner, or stopped answering."""


def _reap_runners(_signum: int = 0, _frame: FrameType | None = None) -> None:
    """Wait for every runner that has ended. Not SIGCHLD ignored (the kernel would reap them for
    us): a runner's CPU then counts nowhere, and bench/local_executor.py measures it here."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass
    except ChildProcessError:
        pass


# --- the server (its own process) -----------------------------------------------------------------


def _become_runner(request: dict[str, Any], ready: int) -> NoReturn:
    """In the forked child: detach, write the job file, tell the server its start time on `ready`,
    run the step, never return. A runner that fails before its job file is written runs nothing (the
    server sees `ready` closed without a word and answers with an error).

    Its stdio is /dev/null: the runner log is created only if the runner itself fails (its traceback),
    not for every step (creating a file is the dearest thing a runner does: ~0.15 ms of CPU on ext4)."""
    code = 1
    config: RunnerConfig | None = None
    log: str | None = None
    try:
        gc.disable()  # a runner lives briefly and allocates little; a collection would only copy pages
        os.setsid()  # its own session: a signal to the scheduler's group does not reach it
        # SIGCHLD keeps the server's handler until Wakeups replaces it, before the command starts.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # Nothing else of the server's (its pipes to the scheduler) stays open in a runner.
        os.closerange(3, ready)
        os.closerange(ready + 1, 65536)
        config = RunnerConfig.from_json(request["config"])
        log = str(request["log"])
        os.chdir(config.workdir)
        os.umask(0o077)  # the step's files (staged reads, results, logs) are its tenant's: owner-only
        start_time = write_job_file(config)
        os.write(ready, start_time.encode())
        os.close(ready)
        code = run_runner(config)
    except BaseException:
        if config is not None:
            record_runner_failure(config, log)
    finally:
        os._exit(code)


def _fork_runner(request: dict[str, Any]) -> dict[str, Any]:
    """Fork the runner and answer once it has written its job file (naming its pid and start time).
    The job file exists before the command does and before the executor hears the pid, so a
    submission whose command started can always be found, whoever dies when."""
    config = request["config"]
    if not config.get("job_file") or not config.get("submission"):
        raise ForkServerError("a runner needs its job file and submission (workset, attempt, step)")
    wait_for_ready, ready = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(wait_for_ready)
        _become_runner(request, ready)
    os.close(ready)
    try:
        start_time = os.read(wait_for_ready, 64).decode()  # one write; nothing if the runner failed
    finally:
        os.close(wait_for_ready)
    if not start_time:
        raise ForkServerError(
            f"runner {pid} ended before it wrote its job file (its traceback: {request['log']})"
        )
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


def main() -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
