"""The regions service's cluster-head probe on a real Slurm: `scontrol ping` through the same runner the
Slurm executor uses (SLURM_CONF here; SSH for a remote head node)."""

from __future__ import annotations

from pathlib import Path

from services.regions.probes import ClusterProbe, run_probe
from stamen.store.clusters import ClusterRecord
from tests.slurm.conftest import SlurmTestCluster


async def test_scontrol_ping_says_whether_the_head_answers(
    slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    up = ClusterProbe(
        ClusterRecord("hpc", "us-west-2", "slurm", 4, config={"slurm_conf": str(slurm_cluster.conf_path)}),
        10.0,
    )
    result = await run_probe(up, 10.0)
    assert result.ok and "UP" in result.detail and result.latency_ms is not None
    broken = tmp_path / "slurm.conf"
    broken.write_text("ClusterName=gone\nSlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=1\n")
    down = ClusterProbe(
        ClusterRecord("hpc", "us-west-2", "slurm", 4, config={"slurm_conf": str(broken)}), 10.0
    )
    result = await run_probe(down, 10.0)
    assert not result.ok and result.detail, result
