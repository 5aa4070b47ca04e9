"""Every coded error the API can answer (any stamen.errors.CodedError the portal's API loads; its error middleware
answers each with its own code and status) is in docs/api.md's table, so a new error class cannot land
undocumented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Loaded by the API but never its answer, each for a reason.
NOT_ANSWERED = {
    "AUTH_USER_NOT_FOUND": "an unknown user is answered like a wrong password or code (no account probing)",
    "CUSTOMER_NOT_CONFIGURED": "onboarding without a database: the Python API and CLI only",
    "TENANT_LIMIT_INVALID": "`stamen tenant limit` only; no API route sets a tenant limit",
}
# In a fresh interpreter, so only what the API's app imports counts (not what other tests loaded).
_LIST = """
import json
import services.portal.app
from stamen.errors import CodedError

def walk(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from walk(sub)

print(json.dumps(sorted({c.code for c in walk(CodedError) if not c.__subclasses__()})))
"""


def test_every_code_the_api_can_answer_is_documented() -> None:
    listed = subprocess.run(
        [sys.executable, "-c", _LIST], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    codes = set(json.loads(listed.stdout.splitlines()[-1]))
    assert {"S3_ACCESS_DENIED", "BUCKET_GRANT_NOT_FOUND", "AUTH_USER_DISABLED"} <= codes
    # Once answered one by one by the API's handlers, now CodedErrors the middleware answers.
    assert {
        "CLUSTER_NOT_FOUND",
        "CLUSTER_BUSY",
        "WORKSET_NOT_REQUEUEABLE",
        "DLQ_MESSAGE_NOT_FOUND",
        "REGION_NOT_FOUND",
    } <= codes
    assert set(NOT_ANSWERED) <= codes, "a code in NOT_ANSWERED no longer exists: remove it there"
    docs = (REPO / "docs" / "api.md").read_text()
    assert sorted(c for c in codes - set(NOT_ANSWERED) if f"`{c}`" not in docs) == []
