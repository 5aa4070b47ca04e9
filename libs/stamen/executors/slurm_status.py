"""A Slurm job's status (`Executor.poll`): what the cluster and the job's files say, weighed.

ONE `squeue` call (the controller's view: pending, running and recently ended jobs) and ONE `sacct`
call (the accounting database: the final state, the exit code and the resources used) for all the
handles at once. Sources, in order of trust: a finished state in sacct, then a finished state in squeue
(the controller keeps ended jobs for MinJobAge seconds), then the exit file the batch script wrote,
then slurmstepd's own message in the job's stderr ("CANCELLED ... DUE TO TIME LIMIT", "Exceeded job
memory limit"), then the cancel marker. A job that none of them knows is LOST: a job is never taken as
succeeded just because Slurm has forgotten it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.executors.base import JobHandle, JobResources, JobState, JobStatus
from stamen.executors.slurm_commands import LOG_TAIL_BYTES, SlurmCommandError, SlurmCommands, handle_files
from stamen.executors.slurm_states import (
    SACCT_FIELDS,
    SQUEUE_FIELDS,
    AccountingRecord,
    QueueRecord,
    decode_wait_status,
    epoch_to_datetime,
    int_or_none,
    outcome_from_exit_file,
    parse_sacct_output,
    parse_squeue_output,
    refine_with_slurmstepd,
    slurm_state_to_job_state,
    slurmstepd_verdict,
)

LOG_TAIL_LINES = 50


@dataclass(frozen=True)
class JobLogs:
    tail: str  # last lines of stderr, then of stdout, with headers
    slurmstepd_verdict: tuple[JobState, str] | None


class SlurmStatusReader:
    """Polls Slurm for many jobs at once and reads each job's files for what Slurm does not say."""

    def __init__(self, commands: SlurmCommands) -> None:
        self._commands = commands

    async def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        if not handles:
            return {}
        job_ids = ",".join(dict.fromkeys(handle.job_id for handle in handles))
        queue = await self._query_queue(job_ids)
        accounting = await self._query_accounting(job_ids)
        return {handle.job_id: await self._status(handle, queue, accounting) for handle in handles}

    async def _query_queue(self, job_ids: str) -> dict[str, QueueRecord]:
        fields = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
        argv = ["squeue", "--noheader", "--states=all", f"--jobs={job_ids}", f"--Format={fields}"]
        result = await self._commands.run(argv)
        if not result.succeeded:
            if "Invalid job id" in result.stderr:  # every id asked for is unknown to the controller
                return {}
            raise SlurmCommandError(
                "SLURM_QUERY_FAILED", f"squeue failed (exit {result.returncode}): {result.stderr.strip()}",
                argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        return parse_squeue_output(result.stdout)

    async def _query_accounting(self, job_ids: str) -> dict[str, AccountingRecord]:
        argv = [
            "sacct",
            "--noheader",
            "--parsable2",
            f"--jobs={job_ids}",
            f"--format={','.join(SACCT_FIELDS)}",
        ]
        result = await self._commands.run(argv)
        if not result.succeeded:
            # Accounting is optional in Slurm (and off by default on ParallelCluster): "Slurm accounting
            # storage is disabled", or slurmdbd down. The exit file then carries the outcome.
            return {}
        return parse_sacct_output(result.stdout)

    async def _status(
        self, handle: JobHandle, queue: dict[str, QueueRecord], accounting: dict[str, AccountingRecord]
    ) -> JobStatus:
        queued = queue.get(handle.job_id)
        accounted = accounting.get(handle.job_id)
        if accounted is not None and _ended_before_submit(accounted.ended_at, handle):
            accounted = None  # a job id reused after the cluster lost its state: not our job
        accounted_state = slurm_state_to_job_state(accounted.state) if accounted else None
        queued_state = slurm_state_to_job_state(queued.state) if queued else None

        if accounted is not None and accounted_state is not None and accounted_state.finished:
            return await self._finished_from_accounting(handle, accounted, accounted_state)
        if queued is not None and queued_state is not None:
            if queued_state.finished:
                return await self._finished_from_queue(handle, queued, queued_state)
            return JobStatus(
                handle=handle, state=queued_state, native_state=queued.state,
                started_at=queued.started_at if queued_state is JobState.RUNNING else None,
                reason=queued.reason if queued.reason not in ("None", "") else "",
            )  # fmt: skip
        if accounted is not None and accounted_state is not None:  # squeue raced: ended since
            return JobStatus(
                handle=handle, state=accounted_state, native_state=accounted.state,
                started_at=accounted.started_at,
            )  # fmt: skip
        return await self._finished_from_exit_file(handle, queued.state if queued else "")

    async def _finished_from_accounting(
        self, handle: JobHandle, record: AccountingRecord, state: JobState
    ) -> JobStatus:
        files = handle_files(handle)
        exit_document = await self._read_exit_file(handle, files)
        exit_code, signal_number = record.exit_code, record.signal
        if signal_number is not None:
            exit_code = None
        resources = JobResources(
            elapsed_seconds=record.elapsed_seconds,
            cpu_seconds=record.cpu_seconds,
            max_rss_mb=record.max_rss_mb,
        )
        return await self._ended(
            handle, files, state, record, exit_code, signal_number, resources, exit_document
        )

    async def _finished_from_queue(
        self, handle: JobHandle, record: QueueRecord, state: JobState
    ) -> JobStatus:
        files = handle_files(handle)
        exit_document = await self._read_exit_file(handle, files)
        if exit_document is not None:
            exit_code, signal_number, resources = outcome_from_exit_file(exit_document)
        else:
            exit_code, signal_number = (
                decode_wait_status(record.raw_exit_status)
                if record.raw_exit_status is not None
                else (None, None)
            )
            resources = JobResources()
        if resources.elapsed_seconds is None and record.started_at and record.ended_at:
            resources = resources.model_copy(
                update={"elapsed_seconds": (record.ended_at - record.started_at).total_seconds()}
            )
        return await self._ended(
            handle, files, state, record, exit_code, signal_number, resources, exit_document
        )

    async def _ended(
        self,
        handle: JobHandle,
        files: dict[str, str],
        state: JobState,
        record: AccountingRecord | QueueRecord,
        exit_code: int | None,
        signal_number: int | None,
        resources: JobResources,
        exit_document: dict[str, Any] | None,
    ) -> JobStatus:
        """An ended job's status, whichever of Slurm's records said it ended: its logs' tail, and
        slurmstepd's own verdict (an out-of-memory kill) over Slurm's state."""
        logs = await self._read_logs(files)
        state, note = refine_with_slurmstepd(state, logs.slurmstepd_verdict)
        return JobStatus(
            handle=handle,
            state=state,
            exit_code=exit_code,
            signal=signal_number,
            native_state=record.state,
            started_at=record.started_at,
            ended_at=record.ended_at,
            resources=resources,
            log_tail=logs.tail,
            reason=await self._reason(handle, state, record.state, exit_code, signal_number, exit_document)
            + note,
        )

    async def _finished_from_exit_file(self, handle: JobHandle, queue_state: str) -> JobStatus:
        """Slurm no longer knows the job (or shows a state this module does not know)."""
        files = handle_files(handle)
        exit_document = await self._read_exit_file(handle, files)
        logs = await self._read_logs(files)
        verdict = logs.slurmstepd_verdict
        if exit_document is None:
            if verdict is not None:  # slurmstepd killed the whole batch step, the script too
                state, line = verdict
                return JobStatus(
                    handle=handle, state=state, native_state=f"{state.name} (from slurmstepd's message)",
                    log_tail=logs.tail,
                    reason=(f"{await self._reason(handle, state, state.name, None, None, None)}; "
                            f"Slurm no longer knows the job, its stderr says: {line}"),
                )  # fmt: skip
            if await self._cancel_requested(handle, files):  # e.g. a pending job: it never ran
                return JobStatus(
                    handle=handle, state=JobState.CANCELLED, native_state="CANCELLED",
                    log_tail=logs.tail, reason="cancelled by stamen (scancel)",
                )  # fmt: skip
            unknown = (
                f"shows it in the unknown state {queue_state!r}" if queue_state else "no longer knows it"
            )
            return JobStatus(
                # "LOST" first (the diagnosis keys on the first word: transient, retried), then what
                # squeue still said, if anything.
                handle=handle, state=JobState.LOST, native_state=f"LOST ({queue_state})" if queue_state else "LOST",
                log_tail=logs.tail,
                reason=(f"Slurm {unknown} (not in squeue, no sacct record: is accounting enabled?) and "
                        f"its batch script left no exit file {files['exit_file']}: the job was killed "
                        f"before it could write it (SIGKILL, node lost) or the workdir is not shared "
                        f"with the compute nodes"),
            )  # fmt: skip
        exit_code, signal_number, resources = outcome_from_exit_file(exit_document)
        received_signal = int_or_none(exit_document.get("received_signal"))
        if received_signal is None and exit_code == 0:
            state, native = JobState.SUCCEEDED, "exit 0"
        elif verdict is not None:
            state, native = verdict[0], f"{verdict[0].name} (from slurmstepd's message)"
        elif received_signal is None:
            state = JobState.FAILED
            native = f"signal {signal_number}" if signal_number is not None else f"exit {exit_code}"
        elif _reached_time_limit(handle, resources):
            state, native = JobState.TIMEOUT, f"signal {received_signal} at the time limit"
        else:
            state, native = JobState.CANCELLED, f"signal {received_signal}"
        note = f"; its stderr says: {verdict[1]}" if verdict is not None and state is verdict[0] else ""
        return JobStatus(
            handle=handle,
            state=state,
            exit_code=exit_code,
            signal=signal_number,
            native_state=native,
            started_at=epoch_to_datetime(exit_document.get("started_at")),
            ended_at=epoch_to_datetime(exit_document.get("ended_at")),
            resources=resources,
            log_tail=logs.tail,
            reason=await self._reason(handle, state, native, exit_code, signal_number, exit_document) + note,
        )

    async def _reason(
        self, handle: JobHandle, state: JobState, native_state: str, exit_code: int | None,
        signal_number: int | None, exit_document: dict[str, Any] | None,
    ) -> str:  # fmt: skip
        if state is JobState.SUCCEEDED:
            return ""
        if state is JobState.FAILED:
            if signal_number is not None:
                return f"the step was killed by signal {signal_number} (Slurm state {native_state})"
            return f"the step exited with code {exit_code} (Slurm state {native_state})"
        if state is JobState.CANCELLED:
            received = int_or_none(exit_document.get("received_signal")) if exit_document else None
            signal_text = f", the step received signal {received}" if received is not None else ""
            if await self._cancel_requested(handle, handle_files(handle)):
                return f"cancelled by stamen (scancel){signal_text}"
            by_user = re.search(r"by (\d+)", native_state)
            who = f" by uid {by_user.group(1)}" if by_user else ""
            return f"cancelled outside stamen{who} (scancel or a signal; Slurm state {native_state}){signal_text}"
        if state is JobState.TIMEOUT:
            limit = handle.extra.get("time_limit_minutes")
            limit_text = f" of {limit} min" if limit else ""
            return f"the job reached its time limit{limit_text} and Slurm stopped it (Slurm state {native_state})"
        if state is JobState.OUT_OF_MEMORY:
            return f"the job used more memory than it requested (Slurm state {native_state})"
        if state is JobState.NODE_FAIL:
            return f"a node of the job failed or did not boot (Slurm state {native_state})"
        if state is JobState.PREEMPTED:
            return f"the job was preempted by a higher-priority job (Slurm state {native_state})"
        return f"Slurm state {native_state}"

    async def _read_exit_file(self, handle: JobHandle, files: dict[str, str]) -> dict[str, Any] | None:
        raw = await self._commands.read_tail(files["exit_file"], LOG_TAIL_BYTES)
        if raw is None:
            return None
        try:
            document = json.loads(raw.decode(errors="replace"))
        except json.JSONDecodeError:
            return None
        if not isinstance(document, dict) or document.get("job_id") not in ("", handle.job_id):
            return None  # another job's file (resubmitted into the same workdir)
        return document

    async def _cancel_requested(self, handle: JobHandle, files: dict[str, str]) -> bool:
        raw = await self._commands.read_tail(files["cancel_marker"], 4096)
        if raw is None:
            return False
        try:
            marker = json.loads(raw.decode(errors="replace"))
        except json.JSONDecodeError:
            return False
        return isinstance(marker, dict) and marker.get("job_id") == handle.job_id

    async def _read_logs(self, files: dict[str, str]) -> JobLogs:
        tails: dict[str, str] = {}
        for label in ("stderr", "stdout"):
            raw = await self._commands.read_tail(files[f"{label}_file"], LOG_TAIL_BYTES)
            tails[label] = (
                "\n".join(raw.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]) if raw else ""
            )
        combined = "\n".join(f"--- {label} (last lines) ---\n{text}" for label, text in tails.items() if text)
        return JobLogs(tail=combined, slurmstepd_verdict=slurmstepd_verdict(tails["stderr"]))


def _ended_before_submit(ended_at: datetime | None, handle: JobHandle) -> bool:
    # Slurm's times have second granularity and may come from another clock: allow a minute.
    return ended_at is not None and (handle.submitted_at - ended_at).total_seconds() > 60


def _reached_time_limit(handle: JobHandle, resources: JobResources) -> bool:
    limit = handle.extra.get("time_limit_minutes")
    if not limit or not limit.isdigit() or resources.elapsed_seconds is None:
        return False
    return resources.elapsed_seconds >= int(limit) * 60 - 1
