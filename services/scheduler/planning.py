"""From a stored workset to the steps its cluster runs, and the executors per cluster kind."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.scheduler.executors import ExecutorFactory
from stamen.domain.steps import StepSpec
from stamen.domain.workset import Workset
from stamen.executors.base import Executor
from stamen.pipelines import Pipeline, get_pipeline, plan_steps
from stamen.settings import Settings
from stamen.store.clusters import ClusterRecord
from stamen.tenancy.buckets import S3Location, spec_locations

StepPlanner = Callable[[Workset, ClusterRecord], list[StepSpec]]


class PipelinesFileError(ValueError):
    code = "PIPELINES_FILE_INVALID"


def read_pipelines_file(path: Path) -> dict[str, Pipeline]:
    """Operator-defined pipelines (YAML: `pipelines:` list of Pipeline documents)."""
    try:
        doc = yaml.safe_load(path.read_text())
        items = doc["pipelines"]
        pipelines = [Pipeline.model_validate(item) for item in items]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as exc:
        raise PipelinesFileError(f"{path}: not a valid pipelines file (a `pipelines:` list): {exc}") from None
    return {p.name: p for p in pipelines}


class WorksetPlanner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._extra = read_pipelines_file(settings.pipelines_file) if settings.pipelines_file else {}

    def __call__(self, ws: Workset, cluster: ClusterRecord) -> list[StepSpec]:
        name = str(ws.spec.get("pipeline", ""))
        pipeline = self._extra.get(name) or get_pipeline(name)
        root = Path(str((cluster.config or {}).get("workdir_root") or self._settings.resolved_work_dir()))
        # One folder per workset, kept across attempts, so a retry finds the earlier steps' outputs.
        workdir = root / ws.tenant_id / ws.id
        env = {"AWS_ENDPOINT_URL": self._settings.aws_endpoint_url} if self._settings.aws_endpoint_url else {}
        steps = plan_steps(pipeline, ws.spec, ws.attempt, str(workdir), workset_id=ws.id, env=env)
        if ws.memory_multiplier > 1.0:  # a resource failure: ask for more memory this time
            steps = [
                s.model_copy(update={"memory_mb": int(s.memory_mb * ws.memory_multiplier)})
                if s.memory_mb
                else s
                for s in steps
            ]
        # Tools that size their own heap (java -Xmx, samtools -m) read the limit from here.
        return [
            s.model_copy(update={"env": {**s.env, "STAMEN_MEMORY_MB": str(s.memory_mb)}})
            if s.memory_mb
            else s
            for s in steps
        ]


@dataclass
class _Known:
    spec: dict[str, Any]  # a copy of the spec this was computed from
    locations: list[S3Location]
    plan_for: tuple[Any, ...] | None = None  # what else the plan was computed from
    plan: list[StepSpec] = field(default_factory=list)


class WorksetPlans:
    """Each workset's S3 locations and planned steps, computed once per workset (and attempt, cluster)
    rather than before every step: the dispatcher asks for both at admission and after every step's end,
    and both are pure functions of what they are computed from. An entry is used only when that is equal
    to what it was computed from: the stored spec (compared in full, so a spec changed by a requeue is
    walked and planned again), and for the plan the attempt, the memory multiplier and the cluster's name
    and settings (a new `workdir_root`). The bucket check itself (the tenant's rights, which a revoked
    grant changes) is asked of every location before every step: only the walk of the spec is kept.
    Bounded: a workset's entry goes when it ends (`forget`), the oldest when more than `size` are kept."""

    def __init__(self, planner: StepPlanner, size: int = 4096) -> None:
        self._planner = planner
        self._size = size
        self._known: OrderedDict[str, _Known] = OrderedDict()

    def _entry(self, ws: Workset) -> _Known:
        known = self._known.get(ws.id)
        if known is not None and known.spec == ws.spec:
            self._known.move_to_end(ws.id)
            return known
        known = _Known(copy.deepcopy(ws.spec), spec_locations(ws.spec))
        self._known[ws.id] = known
        self._known.move_to_end(ws.id)
        while len(self._known) > self._size:
            self._known.popitem(last=False)
        return known

    def locations(self, ws: Workset) -> list[S3Location]:
        """Every S3 location the workset's spec names (`spec_locations`)."""
        return self._entry(ws).locations

    def plan(self, ws: Workset, cluster: ClusterRecord) -> list[StepSpec]:
        """The planner's steps for this attempt on `cluster`; raises what the planner raises (not kept)."""
        known = self._entry(ws)
        plan_for = (ws.tenant_id, ws.attempt, ws.memory_multiplier, cluster.name, cluster.config)
        if known.plan_for != plan_for:
            known.plan = self._planner(ws, cluster)
            known.plan_for = plan_for
        return list(known.plan)

    def forget(self, workset_id: str) -> None:
        self._known.pop(workset_id, None)


def default_executor_factories(settings: Settings) -> dict[str, ExecutorFactory]:
    def local(cluster: ClusterRecord) -> Executor:
        from stamen.executors.local import LocalExecutor

        return LocalExecutor(cluster=cluster.name)

    def slurm(cluster: ClusterRecord) -> Executor:
        from stamen.executors.remote import runner_for_cluster
        from stamen.executors.slurm import SlurmExecutor

        config = cluster.config or {}
        return SlurmExecutor(
            cluster=cluster.name,
            runner=runner_for_cluster(config),  # a remote head node over SSH, or commands run here
            partition=config.get("partition"),
            account=config.get("account"),
            extra_sbatch_args=config.get("extra_sbatch_args", ()),
        )

    return {"local": local, "slurm": slurm}
