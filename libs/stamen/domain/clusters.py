"""A compute cluster as people declare it: one model, whichever way it comes in (the API and the
portal's Clusters page, the clusters file the scheduler reads at start-up, `stamen cluster add`).

The kinds and statuses are also the `clusters` table's CHECKs (a test keeps them in step)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stamen.domain.regions import REGION_NAME_REGEX

ExecutorKind = Literal["local", "slurm"]
# active: takes new worksets; draining: finishes what it runs, takes nothing new; down: takes nothing.
ClusterStatus = Literal["active", "draining", "down"]
CLUSTER_NAME_REGEX = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
MAX_CLUSTER_CONCURRENCY = 100_000
MAX_PRICE_FACTOR = 100.0
DataLocation = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CLUSTER_NAME_REGEX)
    region: str = Field(pattern=REGION_NAME_REGEX)
    executor: ExecutorKind = "local"
    max_concurrent: int = Field(default=2, ge=0, le=MAX_CLUSTER_CONCURRENCY)
    price_factor: float = Field(default=1.0, gt=0, le=MAX_PRICE_FACTOR)
    data_locations: list[DataLocation] = Field(
        default_factory=list,
        max_length=100,
        description="Buckets (name or s3:// URI) and regions its data is close to.",
    )
    config: dict[str, Any] = Field(default_factory=dict)
