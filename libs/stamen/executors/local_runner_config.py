"""What a local step's runner is told: the command, its limits and its files (RunnerConfig, JSON-able for
the fork server), which submission it runs (Submission, for `find`), and the standalone runner's
command line that says the same. The runner itself is local_runner.py."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stamen.executors.local_files import step_file_stem


@dataclass(frozen=True)
class Submission:
    """Which submission a runner runs: what its job file says, so `find` can tell it apart."""

    workset_id: str
    attempt: int
    step: str
    submitted_at: str  # ISO 8601


@dataclass(frozen=True)
class RunnerConfig:
    """Everything a runner needs: the command, its limits, its files. JSON-able, for the fork server.

    Paths are plain strings: a forked runner makes it from JSON, and pathlib objects would cost it the
    copy of every page their Python code touches (~0.3 ms of CPU per step)."""

    argv: list[str]
    workdir: str
    status_file: str
    running_file: str
    stdout_file: str
    stderr_file: str
    cancel_marker: str
    job_file: str | None = None
    submission: Submission | None = None
    time_limit_seconds: float | None = None
    memory_limit_mb: int | None = None
    grace_seconds: float = 10.0
    # The command's whole environment: the submitting process's as it was at submission, with the
    # step's variables. Given to `ForkServer.start_runner`: the step's variables, over the submitting
    # process's environment as it is then; over the fork server's pipe only what differs from the
    # environment the server was started with goes (`to_request`, `from_request`).
    env: dict[str, str] = field(default_factory=dict)
    # argv[0] as found on `env`'s PATH by the submitting process, for a step with a PATH of its own;
    # None: the runner looks it up (in C, `posix_spawnp`, when `env`'s PATH is its own).
    executable: str | None = None

    def to_json(self) -> dict[str, Any]:
        document = dict(self.__dict__)  # not asdict, which copies every variable of `env` one by one
        if self.submission is not None:
            document["submission"] = dict(self.submission.__dict__)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RunnerConfig:
        submission = document.get("submission")
        return cls(**{**document, "submission": Submission(**submission) if submission else None})

    def to_request(self, changed: Mapping[str, str], removed: Sequence[str]) -> dict[str, Any]:
        """As JSON for the fork server, whose environment (`base`, see `from_request`) differs from the
        submitting process's by `changed` and `removed`; `env` holds the step's own variables only."""
        document = self.to_json()
        document["env"] = {**changed, **self.env}
        document["env_removed"] = [name for name in removed if name not in self.env]
        return document

    @classmethod
    def from_request(cls, document: dict[str, Any], base: Mapping[str, str]) -> RunnerConfig:
        """What `to_request` made, the command's whole environment made again over `base`."""
        env = {**base, **document.pop("env")}
        for name in document.pop("env_removed"):
            env.pop(name, None)
        document["env"] = env
        return cls.from_json(document)


def command_path(name: str, env: Mapping[str, str]) -> str | None:
    """Where `name` (argv[0]) is: itself if it names a path, else found on `env`'s PATH (as subprocess
    would look it up, relative entries from the current directory); None if it is not there."""
    if os.sep in name:
        return name
    import shutil  # not at import: the fork server loads this module, and shutil brings bz2, lzma, zlib

    return shutil.which(name, path=os.pathsep.join(os.get_exec_path(dict(env))))


def parse_runner_args(argv: Sequence[str], *, description: str | None = None) -> RunnerConfig:
    """The standalone runner's command line (`python -m stamen.executors.local_runner ...`)."""
    import argparse  # only the standalone runner parses arguments; forked runners get a RunnerConfig
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m stamen.executors.local_runner", description=description)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--status-file", required=True, type=Path)
    parser.add_argument("--running-file", type=Path, help="default: <status file stem>.running.json")
    parser.add_argument("--stdout-file", type=Path, help="default: <step>.stdout.log in the workdir")
    parser.add_argument("--stderr-file", type=Path, help="default: <step>.stderr.log in the workdir")
    parser.add_argument("--cancel-marker", type=Path, help="written by the executor before it cancels")
    parser.add_argument("--time-limit-seconds", type=float)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--grace-seconds", type=float, default=10.0)
    parser.add_argument("--job-file", type=Path, help="written first: which submission this runner runs")
    parser.add_argument("--workset-id", help="with --job-file: the submission's workset")
    parser.add_argument("--attempt", type=int, help="with --job-file: the submission's attempt")
    parser.add_argument("--step", help="with --job-file: the submission's step")
    parser.add_argument("--submitted-at", help="with --job-file: the submission's time (ISO 8601)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- argv...")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given after --")
    submission = None
    if args.job_file is not None:
        missing = [f"--{name.replace('_', '-')}" for name in ("workset_id", "attempt", "step", "submitted_at")
                   if getattr(args, name) is None]  # fmt: skip
        if missing:
            parser.error(f"--job-file also needs {', '.join(missing)}: they say which submission this is")
        submission = Submission(args.workset_id, args.attempt, args.step, args.submitted_at)
    workdir: Path = args.workdir
    status_file: Path = args.status_file
    stem = step_file_stem(status_file)
    return RunnerConfig(
        argv=list(args.command),
        workdir=str(workdir),
        status_file=str(status_file),
        running_file=str(args.running_file or status_file.with_name(f"{stem}.running.json")),
        stdout_file=str(args.stdout_file or workdir / f"{stem}.stdout.log"),
        stderr_file=str(args.stderr_file or workdir / f"{stem}.stderr.log"),
        cancel_marker=str(args.cancel_marker or status_file.with_name(f"{stem}.cancel")),
        job_file=None if args.job_file is None else str(args.job_file),
        submission=submission,
        time_limit_seconds=args.time_limit_seconds,
        memory_limit_mb=args.memory_limit_mb,
        grace_seconds=args.grace_seconds,
        env=dict(os.environ),  # the command inherits the runner's environment
    )
