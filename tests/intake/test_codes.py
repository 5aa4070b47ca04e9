"""Every finding code intake emits is catalogued (stamen.worksets.findings) and documented."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

from services.validator.tests import test_service
from stamen.worksets.findings import CODES
from tests.api import test_isolation_s3
from tests.intake import test_cli_and_api, test_sniff_files, test_storage
from tests.intake.test_storage import STORAGE_CORPUS
from tests.worksets.test_corpus import CORPUS

REPO = Path(__file__).resolve().parents[2]
CODE = re.compile(r"\b(?:VAL|SNF|QUOTA|S3)-[A-Z]+-\d{3}\b")
SOURCES = [
    *(REPO / "libs" / "stamen" / "inputs").glob("*.py"),
    *(REPO / "services" / "validator").glob("*.py"),
    *(REPO / "services" / "portal" / "api").glob("*.py"),
    *(REPO / "libs" / "stamen" / "tenancy").glob("*.py"),
    REPO / "libs" / "stamen" / "cli_intake.py",
]


def test_codes_used_by_intake_are_catalogued_and_documented() -> None:
    used = {code for path in SOURCES for code in CODE.findall(path.read_text())}
    assert {"SNF-OBJ-001", "SNF-OBJ-006", "VAL-DAY-004"} <= used
    assert used - set(CODES) == set()
    docs = (REPO / "docs" / "validation.md").read_text()
    assert [code for code in CODES if code not in docs] == []


def test_every_api_error_code_is_documented() -> None:
    api = "".join(p.read_text() for p in (REPO / "services" / "portal" / "api").glob("*.py"))
    api += (REPO / "libs" / "stamen" / "inputs" / "submission.py").read_text()
    api += (REPO / "libs" / "stamen" / "inputs" / "drops.py").read_text()
    codes = set(re.findall(r'"([A-Z]+(?:_[A-Z]+)+)"', api)) - {"STAMEN_DROP_BUCKETS"}
    docs = (REPO / "docs" / "intake.md").read_text()
    assert {"REQUEST_TOO_LARGE", "TENANT_REQUIRED", "VALIDATION_FAILED"} <= codes
    assert sorted(c for c in codes if f"`{c}`" not in docs) == []


# Codes produced by a test of their own rather than a corpus row; each test names the code it asserts.
PRODUCED_BY: dict[str, Callable[..., object]] = {
    "SNF-OBJ-003": test_storage.test_access_denied_by_an_iam_policy,
    "SNF-OBJ-004": test_storage.test_missing_bucket_and_unreachable_storage,
    "SNF-OBJ-006": test_storage.test_missing_bucket_and_unreachable_storage,
    "VAL-REF-002": test_storage.test_reference_files_are_checked_under_the_configured_location,
    "VAL-DAY-004": test_cli_and_api.test_python_api_reports_the_folder_layout,
    "VAL-DAY-005": test_cli_and_api.test_python_api_reports_the_folder_layout,
    "QUOTA-STORAGE-001": test_service.test_storage_quota_is_checked_for_every_intake_path,
    "SNF-GZ-006": test_sniff_files.test_a_plain_gzip_too_large_to_verify_is_said_so,
    "S3-ACCESS-001": test_isolation_s3.refused_on_every_intake_path,
    "S3-ACCESS-002": test_isolation_s3.a_granted_shared_bucket_works_read_only_where_granted_so,
    "S3-ACCESS-003": test_isolation_s3.refused_on_every_intake_path,
}


def test_every_catalogued_code_is_produced_by_a_test() -> None:
    sniffed = {code for _, _, code, _ in test_sniff_files.CASES.values() if code is not None}
    covered = {code for code, _, _ in CORPUS.values()} | set(STORAGE_CORPUS) | set(PRODUCED_BY) | sniffed
    assert sorted(set(CODES) - covered) == []
    assert sorted(covered - set(CODES)) == []
    for code, test in PRODUCED_BY.items():
        assert code in inspect.getsource(test), (code, test.__name__)
