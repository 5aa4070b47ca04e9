"""Failure diagnostics: the error catalog, classification and reports.

The enums here (``ErrorCategory``, ``Severity``, ``RetryClass``) are the single vocabulary
for failures across stamen.
"""

from stamen.diagnostics.catalog import (
    UNKNOWN_CODE,
    CatalogEntry,
    MatchRules,
    UnknownErrorCodeError,
    catalog,
    get_entry,
    get_remediation_for_error,
    is_retryable,
)
from stamen.diagnostics.classifier import Candidate, Diagnosis, EvidenceLine, classify_error
from stamen.diagnostics.codes import EntryTier, ErrorCategory, RetryClass, Severity
from stamen.diagnostics.report import diagnosis_document, format_diagnostic_report, format_ranked_text

__all__ = [
    "UNKNOWN_CODE",
    "Candidate",
    "CatalogEntry",
    "Diagnosis",
    "EntryTier",
    "ErrorCategory",
    "EvidenceLine",
    "MatchRules",
    "RetryClass",
    "Severity",
    "UnknownErrorCodeError",
    "catalog",
    "classify_error",
    "diagnosis_document",
    "format_diagnostic_report",
    "format_ranked_text",
    "get_entry",
    "get_remediation_for_error",
    "is_retryable",
]
