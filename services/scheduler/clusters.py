"""The cluster registry at start-up: a YAML file if configured, else one local cluster."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from stamen.domain.clusters import ClusterSpec, ClusterStatus
from stamen.settings import Settings
from stamen.store.clusters import ClusterRecord
from stamen.store.unit_of_work import UnitOfWork


class ClusterFileEntry(ClusterSpec):
    """One entry of the clusters file: a ClusterSpec (as the API and `stamen cluster add` take it), and
    the status to register it in."""

    status: ClusterStatus = "active"

    def record(self) -> ClusterRecord:
        return ClusterRecord(
            self.name,
            self.region,
            self.executor,
            self.max_concurrent,
            self.price_factor,
            tuple(self.data_locations),
            self.status,
            self.config,
        )


class ClusterFileError(ValueError):
    code = "CLUSTERS_FILE_INVALID"


def read_clusters_file(path: Path) -> list[ClusterRecord]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterFileError(f"{path}: cannot read clusters file: {exc}") from None
    items = doc.get("clusters") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ClusterFileError(f"{path}: expected a mapping with a `clusters:` list")
    records = []
    for i, item in enumerate(items):
        try:
            records.append(ClusterFileEntry.model_validate(item).record())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ClusterFileError(f"{path}: clusters[{i}]: {problems}") from None
    return records


async def bootstrap_clusters(uow: UnitOfWork, settings: Settings) -> list[ClusterRecord]:
    if settings.clusters_file is not None:
        for record in read_clusters_file(settings.clusters_file):
            await uow.clusters.upsert_cluster(record)
    elif not await uow.clusters.clusters():
        await uow.clusters.upsert_cluster(
            ClusterRecord(
                name="local",
                region=settings.region,
                executor="local",
                max_concurrent=settings.local_cluster_max_concurrent,
                config={"workdir_root": str(settings.resolved_work_dir())},
            )
        )
    return await uow.clusters.clusters()
