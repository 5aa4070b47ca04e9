"""Issue 5's failure scenarios with every step run as a real Slurm job (sbatch/squeue/sacct)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.e2e.test_failure_recovery import Services, failure_scenarios
from tests.slurm.conftest import SlurmTestCluster

pytestmark = pytest.mark.slow


async def test_failure_handling_end_to_end_on_slurm(
    pool: asyncpg.Pool, database_url: str, nats_url: str, tmp_path: Path, slurm_cluster: SlurmTestCluster
) -> None:
    # Jobs run as the Slurm daemons' user; the fixture's folder is readable by them, pytest's is not.
    work = slurm_cluster.root / f"work-{tmp_path.name}"
    clusters = {
        "clusters": [
            {
                "name": "hpc",
                "region": "us-west-2",
                "executor": "slurm",
                "max_concurrent": 10,
                "config": {
                    "slurm_conf": str(slurm_cluster.conf_path),
                    "partition": slurm_cluster.partition,
                    "workdir_root": str(work),
                },
            }
        ]
    }
    (tmp_path / "clusters.yaml").write_text(yaml.safe_dump(clusters))
    services = Services(
        tmp_path, database_url, nats_url, {"STAMEN_CLUSTERS_FILE": str(tmp_path / "clusters.yaml")}
    )
    await failure_scenarios(pool, services, work=work)
    async with pool.acquire() as conn:
        executors = {r["e"] for r in await conn.fetch("SELECT handle->>'executor' AS e FROM step_runs")}
    assert executors == {"slurm"}
