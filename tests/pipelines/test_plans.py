"""Planning pipelines into StepSpecs: templates, partial retry, the Daylily description, errors."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from stamen.pipelines import (
    Pipeline,
    PipelineStep,
    PlanError,
    UnknownPipeline,
    get_pipeline,
    pipeline_names,
    plan_steps,
)
from stamen.worksets.spec import WorksetSpec

DAYLILY_SPEC: dict[str, Any] = {
    "name": "trio-2025-01",
    "tenant": "lsmc",
    "pipeline": "germline",
    "samples": [
        {
            "id": "HG002",
            "platform": "ILMN",
            "r1": "s3://in/HG002_R1.fastq.gz",
            "r2": "s3://in/HG002_R2.fastq.gz",
        },
        {
            "id": "HG003",
            "platform": "ILMN",
            "r1": "s3://in/HG003_R1.fastq.gz",
            "r2": "s3://in/HG003_R2.fastq.gz",
        },
    ],
    "export_uri": "s3://results/trio/",
    "daylily": {
        "day_clone_args": "-d {workdir_name} -t main",
        "dy_r_args": "-p produce_snv_concordances -k -j 192 --config 'aligners=[\"bwa2a\"]'",
        "workdir_name": "trio-2025-01",
    },
}


def test_daylily_pipeline_steps_take_their_arguments_from_the_spec() -> None:
    spec = WorksetSpec.model_validate(DAYLILY_SPEC)  # the real spec model is accepted as well as a dict
    assert get_pipeline(spec.pipeline) is get_pipeline("daylily")

    steps = plan_steps(
        get_pipeline("daylily"), spec, attempt=3, workdir="/fsx/stamen/trio/3", workset_id="ws-42"
    )

    assert [s.step for s in steps] == ["stage", "day-clone", "dy-r", "export"]
    assert {(s.workset_id, s.attempt, s.workdir) for s in steps} == {("ws-42", 3, "/fsx/stamen/trio/3")}
    stage, clone, run, export = steps
    assert stage.argv[:5] == [sys.executable, "-m", "stamen.pipelines.transfer", "stage", "--samples-json"]
    assert json.loads(stage.argv[5]) == [
        {"id": "HG002", "r1": "s3://in/HG002_R1.fastq.gz", "r2": "s3://in/HG002_R2.fastq.gz"},
        {"id": "HG003", "r1": "s3://in/HG003_R1.fastq.gz", "r2": "s3://in/HG003_R2.fastq.gz"},
    ]
    assert clone.argv == ["day-clone", "-d", "trio-2025-01", "-t", "main"]
    assert run.argv == [
        "bash",
        "-lc",
        "cd /fsx/analysis_results/ubuntu/trio-2025-01/daylily && source dyoinit && "
        "dy-r -p produce_snv_concordances -k -j 192 --config 'aligners=[\"bwa2a\"]'",
    ]
    assert run.time_limit_seconds == 72 * 3600
    assert export.argv[3:] == [
        "export", "--source-dir", "/fsx/analysis_results/ubuntu/trio-2025-01/daylily/results",
        "--export-uri", "s3://results/trio/", "--receipt", "/fsx/stamen/trio/3/export/receipt.json",
    ]  # fmt: skip


def test_daylily_workdir_name_defaults_to_the_workset_name() -> None:
    spec = {
        **DAYLILY_SPEC,
        "name": "ws-b",
        "daylily": {"day_clone_args": "-d {workdir_name}", "dy_r_args": "-p x"},
    }
    steps = plan_steps(get_pipeline("daylily"), spec, 1, "/w", start_at_step="day-clone")
    assert [s.step for s in steps] == ["day-clone", "dy-r", "export"]
    assert steps[0].argv == ["day-clone", "-d", "ws-b"]
    assert steps[0].workset_id == "ws-b"


def test_daylily_without_its_arguments_cannot_be_planned() -> None:
    spec = {**DAYLILY_SPEC, "daylily": {"day_clone_args": "-d x"}}
    with pytest.raises(PlanError, match=r"step 'dy-r' needs \{dy_r_command\}"):
        plan_steps(get_pipeline("daylily"), spec, 1, "/w")


def test_fastq_qc_plan_and_partial_retry() -> None:
    spec = {"name": "w1", "samples": [{"id": "S1", "r1": "s3://b/r1.fq"}], "export_uri": "s3://out/w1/"}
    pipeline = get_pipeline("fastq-qc")
    full = plan_steps(pipeline, spec, 1, "/work/w1", env={"AWS_ENDPOINT_URL": "http://s3.local"})
    assert [s.step for s in full] == ["stage", "qc", "report", "export"]
    assert all(s.env == {"AWS_ENDPOINT_URL": "http://s3.local"} for s in full)
    assert full[2].argv[-4:] == ["--workset-id", "w1", "--out-dir", "/work/w1/report"]
    assert all(s.memory_mb and s.time_limit_seconds for s in full)
    assert [s.step for s in plan_steps(pipeline, spec, 2, "/work/w1", start_at_step="export")] == ["export"]
    with pytest.raises(PlanError, match="has no step 'align'; steps: stage, qc, report, export"):
        plan_steps(pipeline, spec, 2, "/work/w1", start_at_step="align")


def test_fastq_qc_without_export_uri_or_samples_cannot_be_planned() -> None:
    pipeline = get_pipeline("fastq-qc")
    with pytest.raises(PlanError, match=r"step 'export' needs \{export_uri\}"):
        plan_steps(pipeline, {"name": "w", "samples": [{"id": "S1", "r1": "s3://b/k"}]}, 1, "/w")
    with pytest.raises(PlanError, match="no samples"):
        plan_steps(pipeline, {"name": "w", "samples": [], "export_uri": "s3://o/"}, 1, "/w")


def test_unknown_pipeline_names_the_known_ones() -> None:
    with pytest.raises(
        UnknownPipeline, match="no pipeline named 'nanopore'; known: daylily, fastq-qc, germline"
    ):
        get_pipeline("nanopore")
    for analysis in ("germline", "somatic", "rna-seq", "wgs", "wes"):
        assert get_pipeline(analysis).name == "daylily"
    assert set(pipeline_names()) >= {"fastq-qc", "daylily", "germline"}


def test_a_list_value_must_be_a_whole_argv_item() -> None:
    pipeline = Pipeline(name="p", steps=[PipelineStep(name="run", argv=["dy-r", "--args={dy_r_args}"])])
    with pytest.raises(PlanError, match="must be a whole argv item"):
        plan_steps(pipeline, DAYLILY_SPEC, 1, "/w")


def test_step_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="repeated: a"):
        Pipeline(name="p", steps=[PipelineStep(name="a", argv=["x"]), PipelineStep(name="a", argv=["y"])])


def test_planned_steps_carry_their_outputs_and_say_which_are_exported() -> None:
    """A step whose outputs are all in S3 outlives its cluster (reused after a region is lost); one that
    also writes locally, or declares nothing, is not."""
    pipeline = Pipeline(
        name="p",
        steps=[
            PipelineStep(name="fetch", argv=["x"], outputs=["{export_uri}fetched/{workset_id}"]),
            PipelineStep(name="call", argv=["x"], outputs=["{workdir}/calls.vcf"]),
            PipelineStep(name="mixed", argv=["x"], outputs=["{export_uri}r.json", "{workdir}/receipt.json"]),
            PipelineStep(name="silent", argv=["x"]),
            PipelineStep(name="unrenderable", argv=["x"], outputs=["s3://b/{no_such_field}"]),
        ],
    )
    spec = {"name": "w", "samples": [{"id": "S1"}], "export_uri": "s3://out/run1/"}
    steps = {s.step: s for s in plan_steps(pipeline, spec, 1, "/w", workset_id="ws-1")}
    assert steps["fetch"].outputs == ["s3://out/run1/fetched/ws-1"] and steps["fetch"].exported
    assert steps["call"].outputs == ["/w/calls.vcf"] and not steps["call"].exported
    assert not steps["mixed"].exported and not steps["silent"].exported
    assert steps["unrenderable"].outputs == [] and not steps["unrenderable"].exported
    fastq_qc = plan_steps(
        get_pipeline("fastq-qc"), {**spec, "samples": [{"id": "S1", "r1": "s3://in/S1.fq"}]}, 1, "/w"
    )
    assert [s.step for s in fastq_qc if s.exported] == []  # its export step also writes a local receipt
