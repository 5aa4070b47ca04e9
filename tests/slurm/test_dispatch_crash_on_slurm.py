"""A scheduler that dies around sbatch, with the step run as a real Slurm job: after the restart the
job is found by its name and adopted (never run twice), or, if sbatch never ran, submitted once."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner
from services.scheduler.tests.support import enqueue, run_until
from services.scheduler.tests.test_dispatch_crash import COUNT, GRACE, SimulatedCrash, step_rows
from services.scheduler.tests.test_scheduler_local import script, settings_for
from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle
from stamen.executors.remote import LocalCommandRunner
from stamen.executors.slurm import SlurmExecutor
from stamen.store.clusters import ClusterRecord
from stamen.store.unit_of_work import UnitOfWork
from tests.slurm.conftest import SlurmTestCluster


class RecordingSlurmExecutor(SlurmExecutor):
    """Crashes the scheduler on submit (after sbatch when `crash_after_sbatch`), or records the calls."""

    def __init__(
        self, cluster: SlurmTestCluster, *, crash: bool = False, crash_after_sbatch: bool = False
    ) -> None:
        super().__init__(cluster="hpc", runner=LocalCommandRunner(cluster.env), partition=cluster.partition)
        self.crash, self.crash_after_sbatch = crash, crash_after_sbatch
        self.submitted: list[JobHandle] = []
        self.found: list[JobHandle | None] = []

    async def submit(self, step: StepSpec) -> JobHandle:
        if self.crash and not self.crash_after_sbatch:
            raise SimulatedCrash
        handle = await super().submit(step)
        self.submitted.append(handle)
        if self.crash:
            raise SimulatedCrash
        return handle

    async def find(self, step: StepSpec) -> JobHandle | None:
        handle = await super().find(step)
        self.found.append(handle)
        return handle


def scheduler_parts(
    pool: asyncpg.Pool, settings_path: Path, executor: SlurmExecutor, holder: str, resubmit_after: float
) -> tuple[Dispatcher, ExecutorRegistry]:
    settings = settings_for(settings_path, [{"name": "align", "argv": script(COUNT.format(step="align"))}])
    registry = ExecutorRegistry({"slurm": lambda _: executor})
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), holder, submit_grace_seconds=GRACE,
                            resubmit_after_seconds=resubmit_after)  # fmt: skip
    return dispatcher, registry


@pytest.mark.parametrize("sbatch_ran", [True, False], ids=["crash-after-sbatch", "crash-before-sbatch"])
async def test_a_scheduler_crash_around_sbatch_never_runs_the_step_twice(
    pool: asyncpg.Pool, tmp_path: Path, slurm_cluster: SlurmTestCluster, sbatch_ran: bool
) -> None:
    # Jobs run as the Slurm daemons' user; the fixture's folder is readable by them, pytest's is not.
    work = slurm_cluster.root / f"work-{tmp_path.name}"
    async with UnitOfWork(pool) as uow:
        await uow.clusters.upsert_cluster(ClusterRecord("hpc", "us-west-2", "slurm", 2,
                                                          config={"workdir_root": str(work)}))  # fmt: skip
        await uow.commit()
    ws_id = await enqueue(pool, "acme")
    settings = settings_for(tmp_path, [{"name": "align", "argv": script(COUNT.format(step="align"))}])
    assert await Admitter(pool, settings, "first").admit_all()

    crashing = RecordingSlurmExecutor(slurm_cluster, crash=True, crash_after_sbatch=sbatch_ran)
    first, _ = scheduler_parts(pool, tmp_path, crashing, "first", resubmit_after=0.5)
    with pytest.raises(SimulatedCrash):
        await first.dispatch_pending()
    assert await step_rows(pool, ws_id) == [("align", "submitting", None)]
    assert len(crashing.submitted) == int(sbatch_ran)

    restarted = RecordingSlurmExecutor(slurm_cluster)
    # After sbatch the job must be found: no resubmission is allowed for an hour.
    dispatcher, registry = scheduler_parts(
        pool, tmp_path, restarted, "second", resubmit_after=3600 if sbatch_ran else 0.5
    )
    loop = SchedulerLoop(pool, Admitter(pool, settings, "second"), dispatcher, JobMonitor(pool, registry, "second"),
                         poll_seconds=0.1)  # fmt: skip
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}, timeout=90) == "completed"

    counter = work / "acme" / ws_id / "align.count"
    assert counter.read_text() == "1"  # one run of the step, whichever way the crash fell
    [(step, state, job_id)] = await step_rows(pool, ws_id)
    assert (step, state) == ("align", "succeeded")
    if sbatch_ran:
        assert restarted.submitted == [] and job_id == crashing.submitted[0].job_id  # adopted
        assert [h.job_id if h else None for h in restarted.found] == [job_id]
    else:
        assert restarted.found[0] is None and [h.job_id for h in restarted.submitted] == [job_id]
        assert restarted.submitted[0].attempt == 1  # the same attempt: nothing had run
