"""Pipelines: ordered steps (command templates with inputs and outputs) and their planning into StepSpecs."""

from __future__ import annotations

from stamen.pipelines.model import Pipeline, PipelineStep, PlanError, plan_steps, step_paths
from stamen.pipelines.registry import UnknownPipeline, get_pipeline, pipeline_names

__all__ = [
    "Pipeline",
    "PipelineStep",
    "PlanError",
    "UnknownPipeline",
    "get_pipeline",
    "pipeline_names",
    "plan_steps",
    "step_paths",
]
