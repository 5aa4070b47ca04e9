"""Workset intake, the pure core: the spec, importers/exporter, validation, content sniffing, cost.

Nothing here does network, S3 or database I/O; callers read the bytes and pass them in.
"""

from stamen.worksets.cost import CostEstimate, estimate
from stamen.worksets.daylily_export import DaylilyFiles, export_daylily
from stamen.worksets.daylily_import import import_daylily
from stamen.worksets.findings import CODES, Finding
from stamen.worksets.form_import import ImportResult, import_form
from stamen.worksets.rules import ValidationReport, validate_spec
from stamen.worksets.sniff import SniffResult, check_read_pairs, sniff_fastq, sniff_object
from stamen.worksets.spec import Sample, WorksetSpec

__all__ = [
    "CODES",
    "CostEstimate",
    "DaylilyFiles",
    "Finding",
    "ImportResult",
    "Sample",
    "SniffResult",
    "ValidationReport",
    "WorksetSpec",
    "check_read_pairs",
    "estimate",
    "export_daylily",
    "import_daylily",
    "import_form",
    "sniff_fastq",
    "sniff_object",
    "validate_spec",
]
