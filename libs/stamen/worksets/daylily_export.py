"""Exporter: a `WorksetSpec` back to Daylily's three files.

Settings Daylily has no place for (max_retries, labels, full notification settings, unit ids that were
not derived from the manifest, coverage) go into a `stamen:` section of daylily_info.yaml, which
Daylily's monitor ignores, so import -> export -> import gives back the same spec.
"""

from __future__ import annotations

import re

import yaml
from pydantic import BaseModel, ConfigDict

from stamen.worksets.daylily_import import INFO_FILE, MANIFEST_FILE, WORK_FILE
from stamen.worksets.findings import Finding, finding
from stamen.worksets.registry import daylily_format, references
from stamen.worksets.spec import Sample, WorksetSpec

_TSV_UNSAFE = re.compile(r"[\t\r\n]")


class DaylilyFiles(BaseModel):
    """The three Daylily files as text, and anything that could not be represented in them."""

    model_config = ConfigDict(frozen=True)

    work_yaml: str
    stage_samples_tsv: str
    info_yaml: str
    findings: list[Finding]

    @property
    def files(self) -> dict[str, str]:
        return {WORK_FILE: self.work_yaml, MANIFEST_FILE: self.stage_samples_tsv, INFO_FILE: self.info_yaml}


def _dump(document: dict[str, object]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)


def _work_document(spec: WorksetSpec) -> dict[str, object]:
    settings = spec.daylily
    pairs: list[tuple[str, str | None]] = [
        ("cluster_name", spec.preferred_cluster),
        ("day-clone", settings.day_clone_args),
        ("budget", spec.budget),
        ("dy-r", settings.dy_r_args),
        ("export_uri", spec.export_uri),
        ("notes", settings.notes),
        ("workdir_name", settings.workdir_name),
    ]
    return {key: value for key, value in pairs if value is not None}


def _sample_cells(sample: Sample, index: int) -> tuple[dict[str, str], list[Finding]]:
    fmt = daylily_format()
    findings: list[Finding] = []
    cells: dict[str, str] = dict(sample.manifest_fields)
    cells.update(
        {
            "RUN_ID": sample.run_id or "",
            "SAMPLE_ID": sample.biological_id,
            "EXPERIMENTID": sample.experiment_id or "",
            "LANE": sample.lane or "",
            "SEQ_VENDOR": sample.platform,
            "SEQ_PLATFORM": sample.instrument or "",
        }
    )

    def place(column: str | None, value: str | None, path: str) -> None:
        if value is None:
            return
        if column is None or cells.get(column):
            why = "no Daylily column holds it" if column is None else f"column {column} is already used"
            findings.append(
                finding("VAL-EXPORT-001", path, f"{value} cannot be exported: {why}", source=MANIFEST_FILE)
            )
            return
        cells[column] = value

    def fastq_columns(platform: str) -> tuple[str, str]:
        return fmt.fastq_columns(fmt.platforms[platform].fastq_prefix)

    r1_column, r2_column = fastq_columns(sample.platform)
    place(r1_column, sample.r1, f"samples[{index}].r1")
    place(r2_column, sample.r2, f"samples[{index}].r2")
    for j, pair in enumerate(sample.extra_fastq):
        extra_r1, extra_r2 = fastq_columns(pair.platform)
        place(extra_r1, pair.r1, f"samples[{index}].extra_fastq[{j}].r1")
        place(extra_r2, pair.r2, f"samples[{index}].extra_fastq[{j}].r2")
    for j, aligned in enumerate(sample.alignments):
        column = fmt.alignment_column(aligned.platform or sample.platform, aligned.format)
        place(column, aligned.uri, f"samples[{index}].alignments[{j}].uri")
    return cells, findings


def _manifest_text(spec: WorksetSpec) -> tuple[str, list[Finding]]:
    findings: list[Finding] = []
    rows: list[dict[str, str]] = []
    for index, sample in enumerate(spec.samples):
        cells, sample_findings = _sample_cells(sample, index)
        rows.append(cells)
        findings.extend(sample_findings)
    standard = daylily_format().manifest_columns
    extra = sorted({column for row in rows for column in row} - set(standard))
    header = [*standard, *extra]
    lines = ["\t".join(header)]
    for index, row in enumerate(rows):
        values = []
        for column in header:
            value = row.get(column, "")
            if _TSV_UNSAFE.search(value):
                findings.append(
                    finding(
                        "VAL-EXPORT-002",
                        f"samples[{index}]",
                        f"{column}: tab or line break replaced by a space",
                        source=MANIFEST_FILE,
                    )
                )
                value = _TSV_UNSAFE.sub(" ", value)
            values.append(value)
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n", findings


def _info_document(spec: WorksetSpec) -> dict[str, object]:
    settings = spec.daylily
    genome = references().genomes.get(spec.reference_genome)
    info: dict[str, object] = {
        "workset_id": settings.workset_id or spec.name,
        "workset_name": spec.name,
        "customer_id": spec.tenant,
        "created_at": settings.created_at,
        "submitted_at": settings.submitted_at,
        "pipeline_type": spec.pipeline,
        "reference_genome": genome.daylily_name if genome else spec.reference_genome,
        "priority": spec.priority,
        "sample_count": len(spec.samples),
        # Daylily lists biological sample ids; units of one sample share it.
        "sample_ids": list(dict.fromkeys(sample.biological_id for sample in spec.samples)),
        "enable_qc": settings.enable_qc,
        "archive_results": settings.archive_results,
        "notification_email": spec.notifications.emails[0] if spec.notifications.emails else None,
        "s3_bucket": settings.s3_bucket,
        "s3_prefix": settings.s3_prefix,
        "export_uri": spec.export_uri,
    }
    stamen: dict[str, object] = {
        "max_retries": spec.max_retries,
        "labels": dict(spec.labels),
        "notifications": spec.notifications.model_dump(),
        "max_cost_usd": spec.max_cost_usd,
        "unit_ids": [sample.id for sample in spec.samples],
        "coverage": {s.id: s.coverage for s in spec.samples if s.coverage is not None} or None,
    }
    info["stamen"] = {key: value for key, value in stamen.items() if value is not None}
    return {key: value for key, value in info.items() if value is not None}


def export_daylily(spec: WorksetSpec) -> DaylilyFiles:
    """Write `spec` as daylily_work.yaml, stage_samples.tsv and daylily_info.yaml."""
    manifest, findings = _manifest_text(spec)
    return DaylilyFiles(
        work_yaml=_dump(_work_document(spec)),
        stage_samples_tsv=manifest,
        info_yaml=_dump(_info_document(spec)),
        findings=findings,
    )
