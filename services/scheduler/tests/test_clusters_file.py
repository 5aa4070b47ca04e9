"""The clusters file read at start-up: a bad file is refused with the entry, the field and why."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.scheduler.clusters import ClusterFileError, bootstrap_clusters, read_clusters_file
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork

GOOD = """
clusters:
  - name: hpc-west
    region: us-west-2
    executor: slurm
    max_concurrent: 8
    data_locations: [lab-bucket]
    config: {partition: main, workdir_root: /fsx/stamen}
"""


@pytest.mark.parametrize(
    "text,expected",
    [
        ("clusters: [\n  - name: x\n", "cannot read clusters file: while parsing a flow node"),
        ("clusters:\n  name: x\n", "expected a mapping with a `clusters:` list"),
        ("- name: x\n", "expected a mapping with a `clusters:` list"),
        (
            GOOD + "  - {name: cpu, region: us-west-2, executor: kubernetes, max_concurrent: -1}\n",
            "clusters[1]: executor: Input should be 'local' or 'slurm'; "
            "max_concurrent: Input should be greater than or equal to 0",
        ),
        (
            GOOD + "  - {name: Bad Name, region: us-west-2, executor: local, max_concurrent: 1}\n",
            "clusters[1]: name: String should match pattern",
        ),
        (
            GOOD + "  - {name: cpu, regoin: us-west-2, executor: local, max_concurrent: 1}\n",
            "clusters[1]: region: Field required; regoin: Extra inputs are not permitted",
        ),
        (
            GOOD + "  - {name: cpu, region: us-west-2, executor: local, max_concurrent: 1, status: paused}\n",
            "clusters[1]: status: Input should be 'active', 'draining' or 'down'",
        ),
    ],
    ids=[
        "not-yaml",
        "clusters-not-a-list",
        "no-mapping",
        "executor-and-capacity",
        "name",
        "misspelt-field",
        "status",
    ],
)
def test_an_invalid_clusters_file_is_refused_with_a_precise_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text(text)
    with pytest.raises(ClusterFileError) as caught:
        read_clusters_file(path)
    assert caught.value.code == "CLUSTERS_FILE_INVALID"
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


def test_a_missing_clusters_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match=r"cannot read clusters file: .*No such file"):
        read_clusters_file(tmp_path / "nope.yaml")


async def test_a_bad_entry_registers_none_of_the_file(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text(GOOD + "  - {name: cpu, region: us-west-2, executor: local, max_concurrent: nine}\n")
    async with UnitOfWork(pool) as uow:
        with pytest.raises(
            ClusterFileError, match=r"clusters\[1\]: max_concurrent: Input should be a valid integer"
        ):
            await bootstrap_clusters(uow, Settings(clusters_file=path))
        assert await uow.clusters.clusters() == []
    path.write_text(GOOD)
    async with UnitOfWork(pool) as uow:
        [cluster] = await bootstrap_clusters(uow, Settings(clusters_file=path))
    assert (cluster.name, cluster.executor, cluster.max_concurrent, cluster.data_locations) == (
        "hpc-west", "slurm", 8, ("lab-bucket",)
    )  # fmt: skip
    assert cluster.config == {"partition": "main", "workdir_root": "/fsx/stamen"}
