# Shared fixtures (real PostgreSQL and NATS servers) for tests/ and each service's own tests/.
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.fixtures"]

# Property tests check what holds for any input, not how fast inputs are made: on a loaded 2-core runner
# Hypothesis' per-example deadline and its "input generation slow" health check fail tests that are right.
settings.register_profile(
    "stamen", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("stamen")

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
