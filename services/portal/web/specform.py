"""The workset form shared by the New workset page and the YAML generator: form fields to a WorksetSpec
document, samples from a pasted sheet or a Daylily manifest, and findings placed at the field they concern.

The form holds strings; the spec model and rules (stamen.worksets) do every check, so the page says exactly
what the API would say about the same workset."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, get_args

from stamen.worksets.daylily_import import import_daylily
from stamen.worksets.findings import Finding
from stamen.worksets.registry import daylily_format, references
from stamen.worksets.spec import NotificationEvent, Pipeline, Platform, Priority

SAMPLE_COLUMNS = ("id", "sample_id", "platform", "r1", "r2")
MAX_SAMPLES = 500
EVENTS = list(get_args(NotificationEvent))
FORM_FIELDS = (
    "name",
    "pipeline",
    "reference_genome",
    "priority",
    "max_retries",
    "export_uri",
    "notifications.emails",
    "notifications.webhook_url",
)
_ROW_KEY = re.compile(r"^samples-(\d{1,3})-(\w+)$")
_SHEET_ALIASES = {
    "sample": "id",
    "unit": "id",
    "sample_unit": "id",
    "read1": "r1",
    "read2": "r2",
    "fastq_1": "r1",
    "fastq_2": "r2",
    "r1_fq": "r1",
    "r2_fq": "r2",
    "vendor": "platform",
}


@dataclass
class SpecForm:
    """What the form shows: its fields (strings) and sample rows, and the findings at each field."""

    values: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=lambda: ["complete", "error"])
    samples: list[dict[str, str]] = field(default_factory=lambda: [dict.fromkeys(SAMPLE_COLUMNS, "")])
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. what an import did

    def value(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def errors_at(self, path: str) -> list[Finding]:
        return [f for f in self.findings if _under(f.field, path)]

    def field_paths(self) -> list[str]:
        """Every field the form shows findings at (the ids of those places come from `field_id`)."""
        rows = [f"samples[{i}].{c}" for i in range(len(self.samples)) for c in SAMPLE_COLUMNS]
        return [*FORM_FIELDS, *rows]

    @property
    def general_findings(self) -> list[Finding]:
        """Findings about no field the form shows (whole-document problems, or a sample's other columns)."""
        shown = self.field_paths()
        return [f for f in self.findings if not any(_under(f.field, p) for p in shown)]


def _under(field_path: str, path: str) -> bool:
    return field_path == path or field_path.startswith((path + ".", path + "["))


def choices() -> dict[str, list[str]]:
    return {
        "pipelines": list(get_args(Pipeline)),
        "priorities": list(get_args(Priority)),
        "platforms": list(get_args(Platform)),
        "references": list(references().genomes),
        "events": EVENTS,
    }


def field_id(path: str) -> str:
    """`samples[2].r1` -> `f-samples-2-r1`: the id of the element that shows a field's findings."""
    return "f-" + re.sub(r"[^A-Za-z0-9_]+", "-", path).strip("-")


def read_form(form: Any) -> SpecForm:
    values = {
        k: str(form.get(k, "")).strip()
        for k in (
            "name",
            "tenant",
            "pipeline",
            "reference_genome",
            "priority",
            "max_retries",
            "export_uri",
            "emails",
            "webhook_url",
            "sheet",
        )
    }
    values["sheet"] = str(form.get("sheet", ""))
    rows: dict[int, dict[str, str]] = {}
    for key in form:
        if match := _ROW_KEY.match(key):
            index, column = int(match.group(1)), match.group(2)
            if column in (*SAMPLE_COLUMNS, "extra"):
                rows.setdefault(index, dict.fromkeys(SAMPLE_COLUMNS, ""))[column] = str(
                    form.get(key, "")
                ).strip()
    samples = [rows[i] for i in sorted(rows)][:MAX_SAMPLES] or [dict.fromkeys(SAMPLE_COLUMNS, "")]
    events = [e for e in form.getall("events", []) if e in EVENTS] if hasattr(form, "getall") else []
    return SpecForm(values=values, events=events, samples=samples)


def document(f: SpecForm, tenant: str) -> dict[str, Any]:
    """The WorksetSpec document of the form: empty fields are left out so the model's defaults apply."""
    doc: dict[str, Any] = {"name": f.value("name"), "tenant": tenant}
    for name in ("pipeline", "reference_genome", "priority", "max_retries", "export_uri"):
        if f.value(name):
            doc[name] = f.value(name)
    rows = list(f.samples)
    while rows and not any(rows[-1].get(c) for c in SAMPLE_COLUMNS if c != "platform"):
        rows.pop()  # blank rows at the end of the table are not samples; one in the middle is reported
    samples = []
    for row in rows:
        sample: dict[str, Any] = {c: row[c] for c in SAMPLE_COLUMNS if row.get(c)}
        if row.get("extra"):
            try:
                sample.update(json.loads(row["extra"]))
            except json.JSONDecodeError:
                pass  # only the portal writes it; a damaged one just drops the extra columns
        samples.append(sample)
    doc["samples"] = samples
    emails = [e.strip() for e in re.split(r"[,\s;]+", f.value("emails")) if e.strip()]
    doc["notifications"] = {"emails": emails, "events": f.events}
    if f.value("webhook_url"):
        doc["notifications"]["webhook_url"] = f.value("webhook_url")
    return doc


def rows_from_sheet(text: str) -> tuple[list[dict[str, str]], list[str]]:
    """Sample rows from a pasted sheet (tab- or comma-separated, with a header row naming the columns:
    id, sample_id, platform, r1, r2). A Daylily manifest (RUN_ID, SAMPLE_ID, ... header) is read as such."""
    text = text.strip()
    if not text:
        return [], ["The sheet is empty: paste rows with a header line first."]
    if text.split("\n", 1)[0].startswith("RUN_ID"):
        return rows_from_manifest(text.encode())
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    header = {h: _SHEET_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in reader.fieldnames or []}
    if "id" not in header.values():
        return [], ["The sheet's first line must name its columns, including id (and platform, r1, r2)."]
    rows = []
    for record in reader:
        row = dict.fromkeys(SAMPLE_COLUMNS, "")
        for raw, column in header.items():
            if column in SAMPLE_COLUMNS:
                row[column] = (record.get(raw) or "").strip()
        rows.append(row)
    return rows[:MAX_SAMPLES], [f"{len(rows)} sample rows read from the sheet."]


def rows_from_manifest(data: bytes) -> tuple[list[dict[str, str]], list[str]]:
    """Sample rows from a Daylily analysis manifest (stage_samples.tsv), read by stamen's Daylily importer.
    Columns the table does not show (CRAMs, extra platforms, manifest fields) travel in a hidden field."""
    imported = import_daylily("{}", data, default_name="manifest")
    if imported.spec is None:
        problems = [
            f"{f.field or 'manifest'}: {f.message}" for f in imported.findings if f.severity == "error"
        ]
        return [], ["The manifest could not be read: " + "; ".join(problems[:5])]
    rows = []
    for sample in imported.spec.samples:
        doc = sample.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        row = {c: str(doc.pop(c, "") or "") for c in SAMPLE_COLUMNS}
        row["platform"] = row["platform"] or sample.platform
        row["extra"] = json.dumps(doc) if doc else ""
        rows.append(row)
    return rows[:MAX_SAMPLES], [f"{len(rows)} samples read from the Daylily manifest."]


def platform_names() -> dict[str, list[str]]:
    return {name: info.aliases for name, info in daylily_format().platforms.items()}
