# Shared fixtures (real PostgreSQL and NATS servers) for tests/ and each service's own tests/.
from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures"]

# scripts/test runs the suite in two pytest-xdist workers, each with its own servers. Tests that share one
# session-wide cluster run in one worker, so it is started once: the Slurm cluster (munged, slurmctld, slurmd).
ONE_WORKER = {"tests/slurm/": "slurm"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for folder, group in ONE_WORKER.items():
            if item.nodeid.startswith(folder):
                item.add_marker(pytest.mark.xdist_group(group))
    # The long end-to-end tests go first, so a worker does not start one when the other has finished.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
