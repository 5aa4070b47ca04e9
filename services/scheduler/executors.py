"""Which executor runs a cluster's jobs: built from the cluster's registry row, kept per cluster."""

from __future__ import annotations

from collections.abc import Callable

from stamen.executors.base import Executor, ReportsJobExits
from stamen.store.clusters import ClusterRecord

ExecutorFactory = Callable[[ClusterRecord], Executor]


class UnknownExecutorKind(ValueError):
    code = "EXECUTOR_UNKNOWN"


class ExecutorRegistry:
    def __init__(self, factories: dict[str, ExecutorFactory]) -> None:
        self._factories = factories
        self._by_cluster: dict[str, tuple[ClusterRecord, Executor]] = {}
        self._on_job_exit: list[Callable[[], None]] = []

    def on_job_exit(self, callback: Callable[[], None]) -> None:
        """`callback` runs when a job of an executor that can tell (the local one) ends."""
        self._on_job_exit.append(callback)
        for _, executor in self._by_cluster.values():
            if isinstance(executor, ReportsJobExits):
                executor.on_job_exit(callback)

    def for_cluster(self, cluster: ClusterRecord) -> Executor:
        known = self._by_cluster.get(cluster.name)
        if known and known[0] == cluster:
            return known[1]
        factory = self._factories.get(cluster.executor)
        if factory is None:
            raise UnknownExecutorKind(
                f"cluster {cluster.name!r} uses executor {cluster.executor!r}; known: {', '.join(sorted(self._factories))}"
            )
        executor = factory(cluster)
        if isinstance(executor, ReportsJobExits):
            for callback in self._on_job_exit:
                executor.on_job_exit(callback)
        self._by_cluster[cluster.name] = (cluster, executor)
        return executor
