"""Failure handling end to end: real scheduler and diagnostics processes, real NATS and PostgreSQL,
steps run by the local executor. Transient errors are retried and resume at the failed step, data
errors are dead-lettered at once (not_retryable), OOM retries with more memory, exhaustion parks in the DLQ, requeue completes,
and killing every service between a failure and its retry loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from services.scheduler.tests.support import enqueue
from stamen.commands import requeue
from stamen.stack.ports import free_port
from stamen.store.unit_of_work import UnitOfWork

pytestmark = pytest.mark.slow

NET_ERROR = (
    "botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "
    '"https://lab-bucket.s3.us-west-2.amazonaws.com/reads/S1_R1.fastq.gz"'
)
COUNT = "import os,sys; p='{step}.count'; n=int(open(p).read()) if os.path.exists(p) else 0; open(p,'w').write(str(n+1)); "


def py(code: str) -> list[str]:
    return ["{python}", "-c", code]


PIPELINES = {
    "pipelines": [
        {
            "name": "flaky-net",
            "steps": [
                {"name": "prep", "argv": py(COUNT.format(step="prep"))},
                {
                    "name": "fetch",
                    "argv": py(
                        COUNT.format(step="fetch")
                        + f"n<2 and (print({NET_ERROR!r}, file=sys.stderr), sys.exit(1))"
                    ),
                },
                {"name": "finish", "argv": py(COUNT.format(step="finish"))},
            ],
        },
        {
            "name": "bad-data",
            "steps": [
                {
                    "name": "qc",
                    "argv": py(
                        "import sys; print('Error: Quality string length is not equal to sequence length (record 1042, line 4168)', file=sys.stderr); sys.exit(1)"
                    ),
                }
            ],
        },
        {
            "name": "oom",
            "steps": [
                {
                    "name": "align",
                    "memory_mb": 1000,
                    "argv": py(
                        "import os,sys; open('memory.txt','a').write(os.environ['STAMEN_MEMORY_MB']+'\\n'); "
                        "os.environ['STAMEN_ATTEMPT']=='1' and (print('slurmstepd: error: Detected 1 oom-kill event(s) in StepId=881.batch. "
                        "Some of your processes may have been killed by the cgroup out-of-memory handler.', file=sys.stderr), sys.exit(137))"
                    ),
                }
            ],
        },
        {
            "name": "needs-fix",
            "steps": [
                {
                    "name": "x",
                    "argv": py(
                        f"import os,sys; os.path.exists('fixed') or (print({NET_ERROR!r}, file=sys.stderr), sys.exit(1))"
                    ),
                }
            ],
        },
    ]
}


class Services:
    def __init__(
        self, tmp_path: Path, database_url: str, nats_url: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.tmp_path = tmp_path
        (tmp_path / "pipelines.yaml").write_text(yaml.safe_dump(PIPELINES))
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "NATS_URL": nats_url,
            "STAMEN_SCHEDULER_POLL_SECONDS": "0.2",
            "STAMEN_WORK_DIR": str(tmp_path / "work"),
            "STAMEN_PIPELINES_FILE": str(tmp_path / "pipelines.yaml"),
            "STAMEN_RETRY_INITIAL_SECONDS": "1.5",
            "STAMEN_RETRY_FACTOR": "1",
            "STAMEN_RETRY_CAP_SECONDS": "1.5",
            "STAMEN_MAX_CONCURRENT_WORKSETS": "10",
            "STAMEN_DEFAULT_TENANT_MAX_CONCURRENT": "10",
            "STAMEN_LOCAL_CLUSTER_MAX_CONCURRENT": "10",
            **(extra_env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for name in ("scheduler", "diagnostics"):
            log = (self.tmp_path / f"{name}.log").open("ab")
            env = {**self.env, "STAMEN_HTTP_PORT": str(free_port())}
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            p.wait(30)

    def logs(self) -> str:
        return "\n".join((self.tmp_path / f"{n}.log").read_text()[-2000:] for n in self.procs)


async def wait_state(
    pool: asyncpg.Pool, ws_id: str, states: set[str], services: Services, timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            state = str(await conn.fetchval("SELECT state FROM worksets WHERE id = $1", ws_id))
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{ws_id} is {state}, wanted {states}\n{services.logs()}"
        await asyncio.sleep(0.2)


async def wait_settled(pool: asyncpg.Pool, ws_id: str, services: Services, timeout: float = 60) -> str:
    """Completed or dead-lettered, or failed once the scheduler has decided on this attempt's diagnosis
    (its inbox holds the diagnosis event, committed with the decision), so a retry cannot still follow."""
    deadline = time.monotonic() + timeout
    while True:
        state = await wait_state(pool, ws_id, {"completed", "dead_lettered", "failed"}, services, timeout)
        if state != "failed":
            return state
        async with pool.acquire() as conn:
            decided = await conn.fetchval(
                "SELECT w.state FROM worksets w"
                " JOIN diagnoses d ON d.workset_id = w.id AND d.attempt = w.attempt"
                " JOIN inbox i ON i.consumer = 'scheduler-diagnosed' AND i.event_id = d.event_id"
                " WHERE w.id = $1",
                ws_id,
            )
        if decided == "failed":
            return "failed"
        assert time.monotonic() < deadline, f"{ws_id} failed and was never decided on\n{services.logs()}"
        await asyncio.sleep(0.2)


async def explain(pool: asyncpg.Pool, ws_id: str, services: Services) -> str:
    """What happened to a workset, for an assertion message: its history, diagnoses and the service logs."""
    async with pool.acquire() as conn:
        history = await conn.fetch(
            "SELECT from_state, to_state, reason FROM workset_history WHERE workset_id = $1 ORDER BY version",
            ws_id,
        )
        diagnoses = await conn.fetch(
            "SELECT attempt, code, retry_class, report FROM diagnoses WHERE workset_id = $1 ORDER BY attempt",
            ws_id,
        )
    lines = [f"{h['from_state']} -> {h['to_state']}: {h['reason']}" for h in history]
    lines += [f"attempt {d['attempt']}: {d['code']} ({d['retry_class']})\n{d['report']}" for d in diagnoses]
    return "\n".join([ws_id, *lines, services.logs()])


async def test_failure_handling_end_to_end_on_the_local_executor(
    pool: asyncpg.Pool, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    await failure_scenarios(pool, Services(tmp_path, database_url, nats_url), work=tmp_path / "work")


async def failure_scenarios(pool: asyncpg.Pool, services: Services, work: Path) -> None:
    """The scenarios of issue 5, on whatever cluster `services` is configured to use."""
    services.start()
    try:
        flaky = await enqueue(pool, "lab-a", pipeline="flaky-net", max_retries=3)
        bad = await enqueue(pool, "lab-b", pipeline="bad-data")
        oom = await enqueue(pool, "lab-c", pipeline="oom")
        stuck = await enqueue(pool, "lab-d", pipeline="needs-fix", max_retries=1)

        # Between the first failure and its retry, every service dies at once; nothing is lost.
        await wait_state(pool, flaky, {"retry_wait"}, services)
        services.kill()
        services.start()

        for ws_id, expected in (
            (flaky, "completed"),
            (bad, "dead_lettered"),
            (oom, "completed"),
            (stuck, "dead_lettered"),
        ):
            state = await wait_settled(pool, ws_id, services)
            assert state == expected, await explain(pool, ws_id, services)

        async with UnitOfWork(pool) as uow:
            flaky_ws = await uow.worksets.get(flaky)
            flaky_steps = await uow.step_runs.step_run_counts(flaky)
            flaky_diag = await uow.diagnoses.for_workset(flaky)
            bad_diag = await uow.diagnoses.for_workset(bad)
            oom_ws = await uow.worksets.get(oom)
            oom_diag = await uow.diagnoses.for_workset(oom)
            parked = await uow.dead_letters.list()
        assert flaky_ws.retry_count == 2 and flaky_steps == {"prep": 1, "fetch": 3, "finish": 1}
        assert len(flaky_diag) == 2 and all(d.retry_class == "transient" and d.retryable for d in flaky_diag)
        assert len(bad_diag) == 1 and bad_diag[0].code.startswith("WS-DAT") and not bad_diag[0].retryable
        assert oom_diag[0].code.startswith("WS-RES") and oom_ws.memory_multiplier == 1.5
        memory = (work / "lab-c" / oom / "memory.txt").read_text().split()
        assert memory == ["1000", "1500"]
        # Both end in the dead-letter queue, each saying why stamen stopped.
        assert {p["workset_id"]: p["reason"] for p in parked} == {
            bad: "not_retryable",
            stuck: "retries_exhausted",
        }

        # Requeued unfixed with a bigger budget: it fails again and IS retried (a fresh budget of 2),
        # then is parked again.
        await requeue(pool, stuck, actor="operator", changes={"max_retries": 2})
        state = await wait_settled(pool, stuck, services)
        assert state == "dead_lettered", await explain(pool, stuck, services)
        async with UnitOfWork(pool) as uow:
            stuck_ws = await uow.worksets.get(stuck)
            stuck_diag = await uow.diagnoses.for_workset(stuck)
        assert (stuck_ws.attempt, stuck_ws.retry_count, stuck_ws.max_retries) == (5, 2, 2)
        assert [d.attempt for d in stuck_diag] == [1, 2, 3, 4, 5]

        # An operator fixes the cause and requeues: a fresh budget, and it completes.
        (work / "lab-d" / stuck / "fixed").write_text("ok")
        await requeue(pool, stuck, actor="operator")
        assert (
            await wait_state(pool, stuck, {"completed", "failed", "dead_lettered"}, services) == "completed"
        )
        async with UnitOfWork(pool) as uow:
            assert [p["workset_id"] for p in await uow.dead_letters.list()] == [bad]
    finally:
        services.stop()
