"""Every finding code intake emits is catalogued (stamen.worksets.findings) and documented."""

from __future__ import annotations

import re
from pathlib import Path

from stamen.worksets.findings import CODES

REPO = Path(__file__).resolve().parents[2]
CODE = re.compile(r"\b(?:VAL|SNF)-[A-Z]+-\d{3}\b")
SOURCES = [*(REPO / "libs" / "stamen" / "inputs").glob("*.py"), *(REPO / "services" / "validator").glob("*.py"),
           *(REPO / "services" / "portal" / "api").glob("*.py"), REPO / "libs" / "stamen" / "cli_intake.py"]


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
