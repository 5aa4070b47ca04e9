"""The packaged catalog loads, validates, and rejects inconsistent data."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from stamen.diagnostics import (
    UNKNOWN_CODE,
    ErrorCategory,
    RetryClass,
    UnknownErrorCodeError,
    catalog,
    get_remediation_for_error,
    is_retryable,
)
from stamen.diagnostics.catalog import parse_catalog


def _entry(code: str = "WS-RES-900", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": code,
        "name": f"Test entry {code}",
        "summary": "An entry used to exercise catalog validation.",
        "category": "resource",
        "severity": "error",
        "retry_class": "resource",
        "match": {"patterns": ["something specific happened"]},
        "remediation": ["Do the obvious thing."],
        "docs_anchor": code.lower(),
    }
    entry.update(overrides)
    return entry


def _unknown_entry() -> dict[str, Any]:
    return _entry(UNKNOWN_CODE, category="unknown", retry_class="permanent", match={})


def _document(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"entries": list(entries)})


def test_catalog_has_at_least_40_codes_in_every_category() -> None:
    entries = catalog()
    assert len(entries) >= 40
    prefixes = {entry.code.split("-")[1] for entry in entries}
    assert prefixes == {"RES", "NET", "DAT", "CFG", "AWS", "PIP", "CLU", "UNK"}
    assert {entry.category for entry in entries} == set(ErrorCategory)


def test_catalog_is_loaded_and_compiled_once() -> None:
    first, second = catalog(), catalog()
    assert first is second
    pattern = first[0].match.compiled_patterns[0]
    assert isinstance(pattern.regex, re.Pattern)
    assert catalog()[0].match.compiled_patterns[0].regex is pattern.regex


def test_every_entry_is_complete() -> None:
    anchors = set()
    for entry in catalog():
        assert entry.remediation, entry.code
        assert entry.docs_anchor not in anchors
        anchors.add(entry.docs_anchor)
        if entry.code != UNKNOWN_CODE:
            assert not entry.match.is_empty, entry.code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("WS-AWS-001", True),
        ("WS-RES-001", True),
        ("WS-AWS-005", False),
        ("WS-DAT-001", False),
        ("WS-CLU-009", True),  # job lost: the next attempt may land on a healthy node
        ("WS-CFG-010", False),  # max duration exceeded: a runaway run would run away again
    ],
)
def test_is_retryable_examples(code: str, expected: bool) -> None:
    assert is_retryable(code) is expected


def test_is_retryable_follows_retry_class_for_all_entries() -> None:
    for entry in catalog():
        expected = entry.retry_class in (RetryClass.TRANSIENT, RetryClass.RESOURCE)
        assert is_retryable(entry.code) is expected, entry.code


def test_remediation_is_a_fresh_list() -> None:
    steps = get_remediation_for_error("WS-RES-001")
    assert steps and all(isinstance(step, str) for step in steps)
    steps.clear()
    assert get_remediation_for_error("WS-RES-001")


@pytest.mark.parametrize("lookup", [get_remediation_for_error, is_retryable])
def test_unknown_code_raises_key_error_naming_the_code(lookup: Any) -> None:
    with pytest.raises(UnknownErrorCodeError) as raised:
        lookup("WS-XYZ-999")
    assert isinstance(raised.value, KeyError)
    assert "WS-XYZ-999" in str(raised.value)


def test_parse_catalog_accepts_a_minimal_valid_document() -> None:
    entries = parse_catalog(_document(_entry(), _unknown_entry()))
    assert [entry.code for entry in entries] == ["WS-RES-900", UNKNOWN_CODE]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ((_entry(), _entry()), "duplicate code"),
        ((_entry(),), UNKNOWN_CODE),
        ((_entry(category="network"), _unknown_entry()), "prefix"),
        ((_entry("WS-RES-9"), _unknown_entry()), "WS-XXX-nnn"),
        ((_entry(match={"patterns": ["unbalanced ("]}), _unknown_entry()), "not a valid regex"),
        ((_entry(match={"patterns": [".*"]}), _unknown_entry()), "no literal text"),
        ((_entry(match={}), _unknown_entry()), "at least one match rule"),
        ((_entry(remediation=[]), _unknown_entry()), "remediation"),
        ((_entry(severity="fatal"), _unknown_entry()), "severity"),
        ((_entry(retry_class="sometimes"), _unknown_entry()), "retry_class"),
        ((_entry(colour="red"), _unknown_entry()), "colour"),
        ((_entry(docs_anchor="Has Spaces"), _unknown_entry()), "docs_anchor"),
    ],
)
def test_parse_catalog_rejects_inconsistent_data(entries: tuple[dict[str, Any], ...], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        parse_catalog(_document(*entries))


def test_slurm_states_are_normalised_to_upper_case() -> None:
    entry = _entry(match={"slurm_states": [" out_of_memory "]})
    (parsed, _) = parse_catalog(_document(entry, _unknown_entry()))
    assert parsed.match.slurm_states == ("OUT_OF_MEMORY",)
