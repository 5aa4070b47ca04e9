"""Importer for Daylily worksets: daylily_work.yaml + the sample manifest TSV + optional daylily_info.yaml.

Daylily users already have these files, so stamen reads them as Daylily's monitor does, including the
key aliases, and keeps everything it does not model itself so the workset can be exported back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from stamen.worksets.documents import (
    MAX_TSV_BYTES,
    Parsed,
    decode_text,
    findings_from_validation_error,
    load_yaml_mapping,
)
from stamen.worksets.findings import Finding, finding, has_errors
from stamen.worksets.form_import import ImportResult
from stamen.worksets.registry import daylily_format
from stamen.worksets.spec import WorksetSpec

WORK_FILE = "daylily_work.yaml"
MANIFEST_FILE = "stage_samples.tsv"
INFO_FILE = "daylily_info.yaml"

# Columns the importer maps onto Sample fields; every other non-empty column goes to manifest_fields.
_IDENTITY_COLUMNS = ("RUN_ID", "SAMPLE_ID", "EXPERIMENTID", "LANE", "SEQ_VENDOR", "SEQ_PLATFORM")
# Daylily's template fills unused cells with "na"; in an input column that means "no file".
_EMPTY_INPUT_MARKERS = frozenset({"", "na", "n/a", "none", "null", "-"})
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

_INFO_STRING_KEYS = (
    "workset_id",
    "workset_name",
    "customer_id",
    "created_at",
    "submitted_at",
    "pipeline_type",
    "reference_genome",
    "priority",
    "notification_email",
    "s3_bucket",
    "s3_prefix",
    "export_uri",
)
_INFO_KNOWN_KEYS = frozenset(
    (*_INFO_STRING_KEYS, "sample_count", "sample_ids", "enable_qc", "archive_results", "stamen")
)
_STAMEN_KEYS = frozenset({"max_retries", "labels", "notifications", "max_cost_usd", "unit_ids", "coverage"})

# Which file a top-level spec field comes from, so model findings can name it.
_FIELD_SOURCES = {
    "samples": MANIFEST_FILE,
    "export_uri": WORK_FILE,
    "preferred_cluster": WORK_FILE,
    "budget": WORK_FILE,
    "daylily": WORK_FILE,
    "name": INFO_FILE,
    "tenant": INFO_FILE,
    "pipeline": INFO_FILE,
    "reference_genome": INFO_FILE,
    "priority": INFO_FILE,
    "max_retries": INFO_FILE,
    "labels": INFO_FILE,
    "notifications": INFO_FILE,
    "max_cost_usd": INFO_FILE,
}


def derive_unit_id(run_id: str, sample_id: str, experiment_id: str, lane: str) -> str:
    """Deterministic unit id RUN_ID_SAMPLE_ID_EXPERIMENTID_LANE: SAMPLE_ID alone repeats across rows."""
    joined = "_".join(part for part in (run_id, sample_id, experiment_id, lane) if part)
    return _UNSAFE_ID_CHARS.sub("-", joined)


def _scalar_text(value: object) -> str | None:
    """Text of a YAML scalar; numbers are accepted as text (`lane: 1`, `workset_id: 42`)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass
class _Manifest:
    samples: list[dict[str, object]] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _manifest_finding(code: str, row: int | None, message: str | None = None) -> Finding:
    return finding(code, f"samples[{row}]" if row is not None else "", message, source=MANIFEST_FILE)


def parse_manifest(data: bytes | str) -> _Manifest:
    """Parse a Daylily sample manifest (stage_samples.tsv / *.analysis_samples_manifest.tsv)."""
    result = _Manifest()
    text, problems = decode_text(data, limit=MAX_TSV_BYTES, source=MANIFEST_FILE)
    if text is None:
        result.findings = problems
        return result
    lines = [
        (number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1) if line.strip()
    ]
    if not lines:
        result.findings.append(finding("VAL-INPUT-005", "", source=MANIFEST_FILE))
        return result
    header_line = lines[0][1]
    header = [cell.strip() for cell in header_line.split("\t")]
    if "\t" not in header_line and "," in header_line:
        result.findings.append(_manifest_finding("VAL-TSV-008", None))
        return result
    duplicates = sorted({column for column in header if column and header.count(column) > 1})
    if duplicates:
        result.findings.append(
            _manifest_finding("VAL-TSV-004", None, f"column(s) {', '.join(duplicates)} appear more than once")
        )
        return result
    missing = missing_columns(header)
    if missing:
        # Named once for the header, instead of one "no platform" / "no input" finding per row downstream.
        result.findings.append(
            _manifest_finding(
                "VAL-TSV-001",
                None,
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing from the header",
            )
        )
        return result
    if len(lines) == 1:
        result.findings.append(_manifest_finding("VAL-TSV-003", None))
        return result
    for row, (number, line) in enumerate(lines[1:]):
        cells = line.split("\t")
        # Editors drop trailing empty cells, so short rows are padded; extra non-empty cells are not.
        if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
            result.findings.append(
                _manifest_finding(
                    "VAL-TSV-002", row, f"line {number} has {len(cells)} fields; the header has {len(header)}"
                )
            )
            continue
        values = {
            column: (cells[i].strip() if i < len(cells) else "") for i, column in enumerate(header) if column
        }
        sample, row_findings = _sample_from_row(values, row, number)
        result.findings.extend(row_findings)
        if sample is not None:
            result.samples.append(sample)
            result.sample_ids.append(values["SAMPLE_ID"])
    return result


def missing_columns(header: list[str]) -> list[str]:
    """What a manifest's header must have for any row to become a sample: SAMPLE_ID, something that names
    the platform (SEQ_VENDOR, SEQ_PLATFORM, or a platform's own input column such as ONT_R1_FQ) and at
    least one input column."""
    fmt = daylily_format()
    present = set(header)
    platform_inputs = {
        column
        for info in fmt.platforms.values()
        if info.fastq_prefix
        for column in fmt.fastq_columns(info.fastq_prefix)
    } | set(fmt.alignment_columns)
    inputs = platform_inputs | set(fmt.fastq_columns(None))
    missing = [] if "SAMPLE_ID" in present else ["SAMPLE_ID"]
    if not present & {"SEQ_VENDOR", "SEQ_PLATFORM"} and not present & platform_inputs:
        missing.append("SEQ_VENDOR (or SEQ_PLATFORM)")
    if not present & inputs:
        missing.append(
            "an input column (R1_FQ/R2_FQ, ILMN_R1_FQ/ILMN_R2_FQ, ONT_R1_FQ, PB_BAM, ULTIMA_CRAM, ...)"
        )
    return missing


def _input(values: Mapping[str, str], column: str) -> str | None:
    value = values.get(column, "")
    return None if value.lower() in _EMPTY_INPUT_MARKERS else value


def _sample_from_row(
    values: Mapping[str, str], row: int, line: int
) -> tuple[dict[str, object] | None, list[Finding]]:
    fmt = daylily_format()
    sample_id = values.get("SAMPLE_ID", "")
    if not sample_id:
        return None, [_manifest_finding("VAL-TSV-006", row, f"line {line} has an empty SAMPLE_ID")]

    consumed = set(_IDENTITY_COLUMNS)
    # (platform or None for the generic R1_FQ/R2_FQ columns, r1, r2)
    groups: list[tuple[str | None, str | None, str | None]] = []
    for platform, info in [(None, None), *fmt.platforms.items()]:
        if info is not None and info.fastq_prefix is None:
            continue
        r1_column, r2_column = fmt.fastq_columns(info.fastq_prefix if info else None)
        consumed.update((r1_column, r2_column))
        r1, r2 = _input(values, r1_column), _input(values, r2_column)
        if r1 or r2:
            groups.append((platform, r1, r2))
    alignments: list[dict[str, object]] = []
    for column, column_info in fmt.alignment_columns.items():
        consumed.add(column)
        uri = _input(values, column)
        if uri:
            alignments.append({"uri": uri, "format": column_info.format, "platform": column_info.platform})

    vendor, instrument = values.get("SEQ_VENDOR", ""), values.get("SEQ_PLATFORM", "")
    platform = (fmt.platform_for_vendor(vendor) if vendor else None) or (
        fmt.platform_for_instrument(instrument) if instrument else None
    )
    if platform is None:
        # No usable vendor/instrument: a platform-specific input column still says what the data is.
        inferred = [p for p, _, _ in groups if p] + [str(a["platform"]) for a in alignments]
        platform = inferred[0] if inferred else None
    if platform is None:
        return None, [
            _manifest_finding(
                "VAL-TSV-005",
                row,
                f"line {line}: SEQ_VENDOR {vendor!r} / SEQ_PLATFORM {instrument!r} "
                "name no known platform and no platform-specific input column is filled",
            )
        ]

    generic = next(((r1, r2) for p, r1, r2 in groups if p is None), None)
    specific = [(p, r1, r2) for p, r1, r2 in groups if p is not None]
    own = next(((r1, r2) for p, r1, r2 in specific if p == platform), None)
    if generic is not None and own is not None and generic != own:
        return None, [
            _manifest_finding(
                "VAL-TSV-007", row, f"line {line}: R1_FQ/R2_FQ and the {platform} FASTQ columns disagree"
            )
        ]
    primary = own or generic or (None, None)
    extra = [{"platform": p, "r1": r1, "r2": r2} for p, r1, r2 in specific if p != platform]

    run_id, experiment_id, lane = (values.get(c, "") for c in ("RUN_ID", "EXPERIMENTID", "LANE"))
    sample: dict[str, object] = {
        "id": derive_unit_id(run_id, sample_id, experiment_id, lane),
        "sample_id": sample_id,
        "platform": platform,
        "instrument": instrument or None,
        "r1": primary[0],
        "r2": primary[1],
        "alignments": alignments,
        "extra_fastq": extra,
        "run_id": run_id or None,
        "experiment_id": experiment_id or None,
        "lane": lane or None,
        "manifest_fields": {c: v for c, v in values.items() if c not in consumed and v},
    }
    return sample, []


def _work_settings(work: Mapping[str, object]) -> tuple[dict[str, str], list[Finding]]:
    """Resolve daylily_work.yaml's key aliases to canonical keys."""
    fmt = daylily_format()
    settings: dict[str, str] = {}
    findings: list[Finding] = []
    known = {spelling for spellings in fmt.work_keys.values() for spelling in spellings}
    for key in work:
        if key not in known:
            findings.append(
                finding(
                    "VAL-INPUT-007",
                    key,
                    f"unknown key {key!r} is ignored",
                    severity="warning",
                    source=WORK_FILE,
                )
            )
    for canonical, spellings in fmt.work_keys.items():
        given: dict[str, str] = {}
        for spelling in spellings:
            if spelling not in work or work[spelling] is None:
                continue
            text = _scalar_text(work[spelling])
            if text is None:
                findings.append(
                    finding(
                        "VAL-TYPE-001",
                        spelling,
                        f"{spelling!r} must be text, not {type(work[spelling]).__name__}",
                        source=WORK_FILE,
                    )
                )
            elif text:
                given[spelling] = text
        if len(set(given.values())) > 1:
            findings.append(
                finding(
                    "VAL-INPUT-008",
                    canonical,
                    f"{' and '.join(given)} are the same setting with different values",
                    source=WORK_FILE,
                )
            )
        elif given:
            settings[canonical] = next(iter(given.values()))
    return settings, findings


def check_work_file(work_yaml: bytes | str) -> list[Finding]:
    """What can be said of a daylily_work.yaml on its own: syntax, keys and their aliases."""
    work = load_yaml_mapping(work_yaml, source=WORK_FILE)
    if work.value is None:
        return work.findings
    return _work_settings(work.value)[1]


def is_work_file(document: Mapping[str, object]) -> bool:
    """A mapping of daylily_work.yaml keys (and nothing of a workset spec)."""
    known = {spelling for spellings in daylily_format().work_keys.values() for spelling in spellings}
    return bool(document) and set(document) <= known


def import_daylily(
    work_yaml: bytes | str,
    manifest_tsv: bytes | str,
    info_yaml: bytes | str | None = None,
    *,
    tenant: str | None = None,
    default_name: str | None = None,
) -> ImportResult:
    """Import a Daylily workset from the contents of its files.

    `tenant` is the tenant the workset was submitted under (authoritative: a customer_id in
    daylily_info.yaml must agree with it). `default_name` (typically the workset folder name) is used
    when daylily_info.yaml has no workset_name."""
    work = load_yaml_mapping(work_yaml, source=WORK_FILE)
    manifest = parse_manifest(manifest_tsv)
    info = load_yaml_mapping(info_yaml, source=INFO_FILE) if info_yaml is not None else Parsed(value={})
    findings = [*work.findings, *manifest.findings, *info.findings]
    if work.value is None or info.value is None or has_errors(findings):
        return ImportResult(spec=None, findings=findings)

    settings, work_findings = _work_settings(work.value)
    findings.extend(work_findings)
    raw, info_findings = _spec_fields_from_info(info.value, manifest, tenant=tenant)
    findings.extend(info_findings)

    info_export = raw.pop("export_uri", None)
    if info_export is not None and settings.get("export_uri") not in (None, info_export):
        findings.append(
            finding(
                "VAL-INPUT-008",
                "export_uri",
                "export_uri differs between daylily_work.yaml and daylily_info.yaml",
                source=INFO_FILE,
            )
        )
    raw["export_uri"] = settings.get("export_uri", info_export)
    raw.setdefault("name", default_name or settings.get("workdir_name"))
    raw["preferred_cluster"] = settings.get("cluster_name")
    raw["budget"] = settings.get("budget")
    daylily = raw.setdefault("daylily", {})
    assert isinstance(daylily, dict)
    daylily.update(
        {
            "day_clone_args": settings.get("day-clone"),
            "dy_r_args": settings.get("dy-r"),
            "workdir_name": settings.get("workdir_name"),
            "notes": settings.get("notes"),
        }
    )
    if has_errors(findings):
        return ImportResult(spec=None, findings=findings)
    try:
        spec = WorksetSpec.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        return ImportResult(
            spec=None, findings=[*findings, *findings_from_validation_error(exc, sources=_FIELD_SOURCES)]
        )
    return ImportResult(spec=spec, findings=findings)


def _spec_fields_from_info(
    info: Mapping[str, object], manifest: _Manifest, *, tenant: str | None
) -> tuple[dict[str, object], list[Finding]]:
    findings: list[Finding] = []
    text: dict[str, str] = {}
    for key in info:
        if key not in _INFO_KNOWN_KEYS:
            findings.append(
                finding(
                    "VAL-INPUT-007",
                    key,
                    f"unknown key {key!r} is ignored",
                    severity="warning",
                    source=INFO_FILE,
                )
            )
    for key in _INFO_STRING_KEYS:
        value = info.get(key)
        if value is None:
            continue
        converted = _scalar_text(value)
        if converted is None:
            findings.append(
                finding(
                    "VAL-TYPE-001", key, f"{key!r} must be text, not {type(value).__name__}", source=INFO_FILE
                )
            )
        elif converted:
            text[key] = converted

    customer = text.get("customer_id")
    if tenant is not None and customer is not None and customer != tenant:
        findings.append(
            finding(
                "VAL-DAY-002",
                "tenant",
                f"customer_id {customer!r} does not match tenant {tenant!r}",
                source=INFO_FILE,
            )
        )
    listed = info.get("sample_ids")
    if listed is not None:
        if not isinstance(listed, list):
            findings.append(
                finding(
                    "VAL-TYPE-001",
                    "sample_ids",
                    "sample_ids must be a list",
                    severity="warning",
                    source=INFO_FILE,
                )
            )
        else:
            missing = [str(s) for s in listed if str(s) not in manifest.sample_ids]
            if missing:
                findings.append(
                    finding(
                        "VAL-DAY-001",
                        "sample_ids",
                        "not in the manifest: " + ", ".join(missing[:10]),
                        source=INFO_FILE,
                    )
                )

    raw: dict[str, object] = {
        "tenant": tenant or customer,
        "pipeline": text.get("pipeline_type", "germline"),
        "reference_genome": text.get("reference_genome", "GRCh38"),
        "priority": text.get("priority"),
        "export_uri": text.get("export_uri"),
        "daylily": {
            key: text.get(key)
            for key in ("workset_id", "s3_bucket", "s3_prefix", "created_at", "submitted_at")
        }
        | {key: info.get(key) for key in ("enable_qc", "archive_results")},
    }
    if "workset_name" in text:
        raw["name"] = text["workset_name"]
    if "notification_email" in text:
        raw["notifications"] = {"emails": [text["notification_email"]]}

    samples = manifest.samples
    stamen = info.get("stamen")
    if stamen is not None:
        if not isinstance(stamen, dict):
            findings.append(
                finding("VAL-TYPE-001", "stamen", "the stamen section must be a mapping", source=INFO_FILE)
            )
            stamen = {}
        for key in stamen:
            if key not in _STAMEN_KEYS:
                findings.append(
                    finding(
                        "VAL-INPUT-007",
                        f"stamen.{key}",
                        f"unknown key {key!r} is ignored",
                        severity="warning",
                        source=INFO_FILE,
                    )
                )
        for key in ("max_retries", "labels", "notifications", "max_cost_usd"):
            if stamen.get(key) is not None:
                raw[key] = stamen[key]
        samples, unit_findings = _apply_stamen_samples(samples, stamen)
        findings.extend(unit_findings)
    raw["samples"] = samples
    return raw, findings


def _apply_stamen_samples(
    samples: list[dict[str, object]], stamen: Mapping[str, object]
) -> tuple[list[dict[str, object]], list[Finding]]:
    """Unit ids and coverage written by `export_daylily` for specs whose ids were not derived."""
    findings: list[Finding] = []
    unit_ids = stamen.get("unit_ids")
    updated = [dict(sample) for sample in samples]
    if unit_ids is not None:
        if (
            isinstance(unit_ids, list)
            and len(unit_ids) == len(updated)
            and all(isinstance(u, str) for u in unit_ids)
        ):
            for sample, unit_id in zip(updated, unit_ids, strict=True):
                sample["id"] = unit_id
        else:
            findings.append(finding("VAL-DAY-003", "stamen.unit_ids", source=INFO_FILE))
    coverage = stamen.get("coverage")
    if isinstance(coverage, dict):
        for sample in updated:
            if sample["id"] in coverage:
                sample["coverage"] = coverage[sample["id"]]
    elif coverage is not None:
        findings.append(
            finding(
                "VAL-TYPE-001",
                "stamen.coverage",
                "stamen.coverage must map unit id to coverage",
                source=INFO_FILE,
            )
        )
    return updated, findings
