"""Intake's refusals of the request itself are coded errors (stamen.errors.CodedError): the API's error
middleware, the pages' guard, the NATS reply and the CLI read one code, HTTP status and details."""

from __future__ import annotations

import pytest

from stamen.errors import CodedError
from stamen.inputs.submission import check_request
from stamen.intake import IdempotencyKeyReused, IntakeRefused


@pytest.mark.parametrize(
    ("tenant", "key", "code"),
    [
        (None, None, "TENANT_REQUIRED"),
        ("Lab One", None, "TENANT_INVALID"),
        ("lab-one", "a key with spaces", "IDEMPOTENCY_KEY_INVALID"),
    ],
)
def test_an_unusable_request_is_refused_with_its_code_and_400(
    tenant: str | None, key: str | None, code: str
) -> None:
    with pytest.raises(IntakeRefused) as refused:
        check_request(tenant, key)
    assert isinstance(refused.value, CodedError)
    assert (refused.value.code, refused.value.http_status, refused.value.details) == (code, 400, {})


def test_a_reused_key_is_refused_with_422_naming_the_workset_it_made() -> None:
    reused = IdempotencyKeyReused("k1", "ws-0123456789abcdef")
    assert isinstance(reused, IntakeRefused)
    assert (reused.code, reused.http_status, reused.details) == (
        "IDEMPOTENCY_KEY_REUSED",
        422,
        {"workset_id": "ws-0123456789abcdef"},
    )
    assert check_request("lab-one", "k1") == "lab-one"
