"""The pipeline model: an ordered list of steps, each a command template with its inputs and outputs.

`plan_steps` turns a pipeline and a workset spec into the `StepSpec`s an executor runs. Templates are
`str.format` fields filled from `template_values` (below). An argv item that is exactly one field whose
value is a list (e.g. `{dy_r_args}`) is spliced in as several arguments; nothing is passed through a
shell unless a step's argv says so.
"""

from __future__ import annotations

import json
import re
import shlex
import string
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stamen.domain.steps import StepSpec

TemplateValue = str | list[str]
_SINGLE_FIELD = re.compile(r"^\{(\w+)\}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class PlanError(ValueError):
    """The pipeline cannot be planned for this spec (a missing field, an unknown step)."""

    code = "PIPELINE_PLAN_FAILED"


class PipelineStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    argv: list[str] = Field(min_length=1, description="Command template; see the module docstring.")
    inputs: list[str] = Field(default_factory=list, description="What the step reads (path/URI templates).")
    outputs: list[str] = Field(default_factory=list, description="What the step writes (path/URI templates).")
    env: dict[str, str] = Field(default_factory=dict)
    cpus: int = Field(default=1, ge=1)
    memory_mb: int | None = Field(default=None, ge=1)
    time_limit_seconds: int | None = Field(default=None, ge=1)


class Pipeline(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    runs_locally: bool = Field(default=True, description="False when it needs a cluster (e.g. Daylily).")
    steps: list[PipelineStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_step_names(self) -> Pipeline:
        names = [step.name for step in self.steps]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"step names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]

    def steps_from(self, start_at_step: str | None) -> list[PipelineStep]:
        """The steps still to run when a (partial) retry starts at `start_at_step` (None: all)."""
        if start_at_step is None:
            return list(self.steps)
        if start_at_step not in self.step_names:
            raise PlanError(
                f"pipeline {self.name!r} has no step {start_at_step!r}; steps: {', '.join(self.step_names)}"
            )
        return self.steps[self.step_names.index(start_at_step) :]


def _spec_dict(spec: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    return spec.model_dump(mode="json") if isinstance(spec, BaseModel) else dict(spec)


def _sample_inputs(spec: dict[str, Any]) -> list[dict[str, str | None]]:
    samples = spec.get("samples") or []
    if not isinstance(samples, list) or not samples:
        raise PlanError("the workset spec has no samples")
    result: list[dict[str, str | None]] = []
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or not sample.get("id"):
            raise PlanError(f"samples[{index}] has no id")
        result.append({"id": str(sample["id"]), "r1": sample.get("r1"), "r2": sample.get("r2")})
    return result


def template_values(
    spec: Mapping[str, Any] | BaseModel, *, workset_id: str, attempt: int, workdir: str, python: str
) -> dict[str, TemplateValue]:
    """The values step templates may use. Keys absent here (e.g. no export_uri) fail the plan if used.

    python, workdir, workset_id, attempt: where and as what the step runs;
    samples_json: `[{"id", "r1", "r2"}]` of every sample, as one JSON argument;
    export_uri: the spec's export_uri;
    workdir_name: Daylily workdir name (daylily.workdir_name, else the workset name);
    day_clone_args / dy_r_args: the spec's Daylily arguments, split like a shell would (lists);
    dy_r_command: `dy-r <dy_r_args>` quoted for a shell.
    """
    data = _spec_dict(spec)
    values: dict[str, TemplateValue] = {
        "python": python,
        "workdir": workdir,
        "workset_id": workset_id,
        "attempt": str(attempt),
        "samples_json": json.dumps(_sample_inputs(data), separators=(",", ":")),
    }
    if data.get("export_uri"):
        values["export_uri"] = str(data["export_uri"])
    daylily = data.get("daylily") or {}
    workdir_name = str(daylily.get("workdir_name") or data.get("name") or workset_id)
    if _SAFE_NAME.match(workdir_name):
        values["workdir_name"] = workdir_name
    if daylily.get("day_clone_args"):
        values["day_clone_args"] = shlex.split(
            str(daylily["day_clone_args"]).replace("{workdir_name}", workdir_name)
        )
    if daylily.get("dy_r_args"):
        dy_r_args = shlex.split(str(daylily["dy_r_args"]))
        values["dy_r_args"] = dy_r_args
        values["dy_r_command"] = shlex.join(["dy-r", *dy_r_args])
    return values


def _render_item(template: str, values: Mapping[str, TemplateValue], where: str) -> list[str]:
    single = _SINGLE_FIELD.match(template)
    if single and isinstance(values.get(single.group(1)), list):
        return list(values[single.group(1)])
    rendered: list[str] = []
    for literal, field_name, format_spec, conversion in string.Formatter().parse(template):
        rendered.append(literal)
        if field_name is None:
            continue
        if field_name not in values:
            raise PlanError(f"{where} needs {{{field_name}}}, which this workset spec does not provide")
        value = values[field_name]
        if isinstance(value, list):
            raise PlanError(f"{where}: {{{field_name}}} is a list of arguments and must be a whole argv item")
        if format_spec or conversion:
            raise PlanError(f"{where}: format specs and conversions are not supported in step templates")
        rendered.append(value)
    return ["".join(rendered)]


def render(template: str, values: Mapping[str, TemplateValue], where: str = "template") -> str:
    """One template rendered as one string (paths, env values): list values are not allowed here."""
    single = _SINGLE_FIELD.match(template)
    if single and isinstance(values.get(single.group(1)), list):
        raise PlanError(f"{where}: {template} is a list of arguments and can only be used in argv")
    return _render_item(template, values, where)[0]


def plan_steps(
    pipeline: Pipeline,
    spec: Mapping[str, Any] | BaseModel,
    attempt: int,
    workdir: str,
    start_at_step: str | None = None,
    *,
    workset_id: str | None = None,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
) -> list[StepSpec]:
    """The StepSpecs to run for one attempt, from `start_at_step` on (earlier steps already succeeded).

    workset_id defaults to the spec's name; env is added to every step (e.g. AWS_ENDPOINT_URL).
    """
    data = _spec_dict(spec)
    workset = workset_id or str(data.get("name") or "")
    if not workset:
        raise PlanError("no workset id: pass workset_id or give the spec a name")
    values = template_values(data, workset_id=workset, attempt=attempt, workdir=workdir, python=python)
    planned: list[StepSpec] = []
    steps = pipeline.steps_from(start_at_step)
    for step in steps:
        where = f"pipeline {pipeline.name!r} step {step.name!r}"
        argv = [arg for item in step.argv for arg in _render_item(item, values, where)]
        step_env = {key: render(value, values, where) for key, value in step.env.items()}
        try:
            outputs = [render(item, values, where) for item in step.outputs]
        except PlanError:  # outputs are descriptive; one that cannot be rendered just is not reusable
            outputs = []
        planned.append(
            StepSpec(
                workset_id=workset,
                attempt=attempt,
                step=step.name,
                argv=argv,
                env={**(env or {}), **step_env},
                workdir=workdir,
                cpus=step.cpus,
                memory_mb=step.memory_mb,
                time_limit_seconds=step.time_limit_seconds,
                outputs=outputs,
            )
        )
    return planned


def step_paths(
    pipeline: Pipeline,
    spec: Mapping[str, Any] | BaseModel,
    attempt: int,
    workdir: str,
    *,
    workset_id: str | None = None,
) -> dict[str, tuple[list[str], list[str]]]:
    """Each step's declared (inputs, outputs), rendered for this spec: to check or show what a step made."""
    data = _spec_dict(spec)
    workset = workset_id or str(data.get("name") or "workset")
    values = template_values(
        data, workset_id=workset, attempt=attempt, workdir=workdir, python=sys.executable
    )
    return {
        step.name: (
            [render(item, values, step.name) for item in step.inputs],
            [render(item, values, step.name) for item in step.outputs],
        )
        for step in pipeline.steps
    }
