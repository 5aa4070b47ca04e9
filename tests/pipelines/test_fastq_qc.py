"""fastq-qc end to end: FASTQs in (moto) S3 -> LocalExecutor runs every step -> report in S3."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobState, JobStatus
from stamen.executors.local import LocalExecutor
from stamen.pipelines import get_pipeline, plan_steps, step_paths

WORKSET = "qc-run-1"


@dataclass
class FastqRead:
    name: str
    sequence: str
    quality: str


def make_reads(seed: int, count: int) -> list[FastqRead]:
    rng = random.Random(seed)
    reads = []
    for i in range(count):
        length = rng.randint(30, 120)
        bases = rng.choices("ACGTNacgt", weights=[30, 20, 25, 30, 3, 2, 2, 2, 2], k=length)
        quality = "".join(chr(33 + rng.randint(2, 41)) for _ in range(length))
        reads.append(FastqRead(f"read{seed}.{i} extra words", "".join(bases), quality))
    return reads


def fastq_bytes(reads: list[FastqRead], gzipped: bool) -> bytes:
    text = "".join(f"@{r.name}\n{r.sequence}\n+\n{r.quality}\n" for r in reads).encode()
    return gzip.compress(text) if gzipped else text


def expected_metrics(reads: list[FastqRead]) -> dict[str, Any]:
    """The numbers computed directly from the reads, independently of the pipeline's code."""
    bases = "".join(r.sequence for r in reads).upper()
    qualities = [ord(c) - 33 for r in reads for c in r.quality]
    gc = bases.count("G") + bases.count("C")
    acgt = gc + bases.count("A") + bases.count("T")
    return {
        "read_count": len(reads),
        "total_bases": len(bases),
        "gc_percent": 100 * gc / acgt,
        "mean_quality": sum(qualities) / len(qualities),
    }


# Sample id with '&' and '<': escaped in the HTML, made safe in file names.
SAMPLES = {
    "NA12878&<b>": {"R1": (make_reads(1, 300), True), "R2": (make_reads(2, 300), True)},
    "HG002": {"R1": (make_reads(3, 150), False), "R2": (make_reads(4, 150), True)},  # plain R1
}


@pytest.fixture
def workset_spec(s3: Any, bucket: str) -> dict[str, Any]:
    samples = []
    for sample_id, reads in SAMPLES.items():
        entry: dict[str, Any] = {"id": sample_id, "platform": "ILMN"}
        for read, (records, gzipped) in reads.items():
            key = f"runs/{sample_id}_{read}.fastq" + (".gz" if gzipped else "")
            s3.put_object(Bucket=bucket, Key=key, Body=fastq_bytes(records, gzipped))
            entry[read.lower()] = f"s3://{bucket}/{key}"
        samples.append(entry)
    return {
        "name": WORKSET,
        "tenant": "lab",
        "pipeline": "fastq-qc",
        "samples": samples,
        "export_uri": f"s3://{bucket}/exports/{WORKSET}/",
    }


async def run_steps(steps: list[StepSpec], timeout: float = 30.0) -> dict[str, JobStatus]:
    """Submit each step after the previous one succeeded, polling the executor as the scheduler does."""
    executor = LocalExecutor(grace_seconds=2)
    results: dict[str, JobStatus] = {}
    for step in steps:
        handle = await executor.submit(step)
        deadline = time.monotonic() + timeout
        while not (status := (await executor.poll([handle]))[handle.job_id]).state.finished:
            assert time.monotonic() < deadline, f"{step.step} did not finish in {timeout}s"
            await asyncio.sleep(0.05)
        results[step.step] = status
        if status.state is not JobState.SUCCEEDED:
            break
    return results


def is_file(path: str) -> bool:
    return Path(path).is_file()


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def test_fastq_qc_end_to_end(workset_spec: dict[str, Any], s3_env: dict[str, str], s3: Any,
                                   bucket: str, tmp_path: Path) -> None:  # fmt: skip
    pipeline = get_pipeline("fastq-qc")
    workdir = tmp_path / "attempt-1"
    steps = plan_steps(pipeline, workset_spec, attempt=1, workdir=str(workdir), env=s3_env)
    assert [s.step for s in steps] == ["stage", "qc", "report", "export"]

    results = await run_steps(steps)

    for name, status in results.items():
        assert status.state is JobState.SUCCEEDED, f"{name}: {status.reason}\n{status.log_tail}"
    assert list(results) == ["stage", "qc", "report", "export"]
    # The tenant's staged reads, results and logs are owner-only: 0600 files, 0700 folders.
    exposed = [
        f"{oct(p.stat().st_mode & 0o777)} {p}"
        for p in [workdir, *workdir.rglob("*")]
        if p.stat().st_mode & 0o077
    ]
    assert exposed == []
    assert any(p.name.endswith(".fastq.gz") for p in workdir.rglob("*"))
    for name, (_, outputs) in step_paths(pipeline, workset_spec, 1, str(workdir)).items():
        for output in outputs:
            if not output.startswith("s3://"):
                assert is_file(output), f"{name} did not write {output}"

    report = json.loads(read_text(workdir / "report" / "qc.json"))
    assert report["workset_id"] == WORKSET
    by_id = {sample["id"]: sample for sample in report["samples"]}
    assert set(by_id) == set(SAMPLES)
    for sample_id, reads in SAMPLES.items():
        files = {f["read"]: f for f in by_id[sample_id]["files"]}
        for read, (records, _) in reads.items():
            expected = expected_metrics(records)
            got = files[read]
            assert got["read_count"] == expected["read_count"]
            assert got["total_bases"] == expected["total_bases"]
            assert got["gc_percent"] == pytest.approx(expected["gc_percent"], rel=1e-12)
            assert got["mean_quality"] == pytest.approx(expected["mean_quality"], rel=1e-12)
        both = expected_metrics(reads["R1"][0] + reads["R2"][0])
        assert by_id[sample_id]["read_count"] == both["read_count"]
        assert by_id[sample_id]["total_bases"] == both["total_bases"]
        assert by_id[sample_id]["gc_percent"] == pytest.approx(both["gc_percent"], rel=1e-12)
        assert by_id[sample_id]["mean_quality"] == pytest.approx(both["mean_quality"], rel=1e-12)
        assert by_id[sample_id]["warnings"] == []

    prefix = f"exports/{WORKSET}/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == [prefix + "qc.html", prefix + "qc.json"]
    exported_json = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "qc.json")["Body"].read())
    assert exported_json == report
    html_object = s3.get_object(Bucket=bucket, Key=prefix + "qc.html")
    assert html_object["ContentType"] == "text/html"
    html = html_object["Body"].read().decode()
    assert "NA12878&amp;&lt;b&gt;" in html and "NA12878&<b>" not in html  # autoescaped
    assert "HG002" in html and f"{by_id['HG002']['read_count']:,}" in html
    assert "<script" not in html and "src=" not in html and "<link" not in html  # self-contained


async def test_start_at_step_runs_only_the_remaining_steps(workset_spec: dict[str, Any], s3_env: dict[str, str],
                                                          s3: Any, bucket: str, tmp_path: Path) -> None:  # fmt: skip
    pipeline = get_pipeline("fastq-qc")
    workdir = tmp_path / "ws"
    first = await run_steps(plan_steps(pipeline, workset_spec, 1, str(workdir), env=s3_env)[:2])  # stage, qc
    assert [s.state for s in first.values()] == [JobState.SUCCEEDED, JobState.SUCCEEDED]
    earlier_job_files = {name: read_text(workdir / f"{name}.job.json") for name in ("stage", "qc")}

    retry = plan_steps(
        pipeline, workset_spec, attempt=2, workdir=str(workdir), start_at_step="report", env=s3_env
    )

    assert [s.step for s in retry] == ["report", "export"]
    assert all(s.attempt == 2 for s in retry)
    results = await run_steps(retry)
    assert all(s.state is JobState.SUCCEEDED for s in results.values()), results
    # stage and qc were not run again: their job files (with their status) are the first attempt's.
    assert {name: read_text(workdir / f"{name}.job.json") for name in ("stage", "qc")} == earlier_job_files
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="exports/")["Contents"]]
    assert sorted(keys) == [f"exports/{WORKSET}/qc.html", f"exports/{WORKSET}/qc.json"]


async def test_malformed_fastq_fails_the_qc_step_with_the_line(workset_spec: dict[str, Any], s3_env: dict[str, str],
                                                              s3: Any, bucket: str, tmp_path: Path) -> None:  # fmt: skip
    reads = make_reads(9, 5)
    broken = fastq_bytes(reads, gzipped=False).decode().splitlines()
    broken[15] = broken[15][:-3]  # line 16: record 4's quality is 3 characters short
    s3.put_object(Bucket=bucket, Key="runs/broken_R2.fastq", Body="\n".join(broken).encode())
    workset_spec["samples"][1]["r2"] = f"s3://{bucket}/runs/broken_R2.fastq"

    results = await run_steps(
        plan_steps(get_pipeline("fastq-qc"), workset_spec, 1, str(tmp_path), env=s3_env)
    )

    assert list(results) == ["stage", "qc"]
    qc = results["qc"]
    assert qc.state is JobState.FAILED and qc.exit_code == 1
    assert "malformed FASTQ at record 4, line 16" in qc.log_tail
    assert "the quality has" in qc.log_tail


async def test_missing_input_object_fails_the_stage_step(workset_spec: dict[str, Any], s3_env: dict[str, str],
                                                        bucket: str, tmp_path: Path) -> None:  # fmt: skip
    workset_spec["samples"][0]["r1"] = f"s3://{bucket}/runs/not-there.fastq.gz"
    results = await run_steps(
        plan_steps(get_pipeline("fastq-qc"), workset_spec, 1, str(tmp_path), env=s3_env)
    )
    assert list(results) == ["stage"]
    assert results["stage"].state is JobState.FAILED
    assert "not-there.fastq.gz" in results["stage"].log_tail and "does not exist" in results["stage"].log_tail
