"""From a stored workset to the steps its cluster runs, and the executors per cluster kind."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from services.scheduler.executors import ExecutorFactory
from stamen.domain.steps import StepSpec
from stamen.domain.workset import Workset
from stamen.executors.base import Executor
from stamen.pipelines import Pipeline, get_pipeline, plan_steps
from stamen.settings import Settings
from stamen.store.clusters import ClusterRecord


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
