"""Turning untrusted bytes into text and YAML mappings, with every failure a finding, never an exception.

Importers work on content handed to them (the caller does the I/O), so this is the one place that
deals with encodings, size limits and YAML's sharper edges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml
from pydantic import ValidationError

from stamen.worksets.findings import Finding, field_path, finding

# A workset config is a few KiB; a manifest with thousands of rows is a few MiB. Anything bigger is not
# what the user meant to upload, and refusing early bounds the work done on hostile input.
MAX_YAML_BYTES = 1 * 1024 * 1024
MAX_TSV_BYTES = 8 * 1024 * 1024


@dataclass
class Parsed:
    """A parse outcome: `value` is set when parsing worked; `findings` says why when it did not."""

    value: dict[str, object] | None = None
    findings: list[Finding] = field(default_factory=list)


def decode_text(data: bytes | str, *, limit: int, source: str | None) -> tuple[str | None, list[Finding]]:
    """Bytes -> text, enforcing the size limit before decoding and accepting a UTF-8 byte order mark."""
    size = len(data.encode("utf-8", errors="surrogatepass")) if isinstance(data, str) else len(data)
    if size > limit:
        return None, [finding("VAL-INPUT-002", "", f"input is {size} bytes; the limit is {limit} bytes",
                              source=source)]
    if isinstance(data, str):
        return data, []
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        return None, [finding("VAL-INPUT-001", "", f"input is not UTF-8 (byte {exc.start} is invalid)",
                              source=source)]


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: a few hundred bytes of nested aliases can expand to billions of
    nodes once anything walks the result ("billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused
        return super().compose_node(parent, index)


class _AliasRefused(Exception):
    pass


def _plain(value: object) -> object:
    """YAML timestamps become ISO strings so the spec sees text, as it would from JSON."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_yaml_mapping(data: bytes | str, *, source: str | None) -> Parsed:
    text, problems = decode_text(data, limit=MAX_YAML_BYTES, source=source)
    if text is None:
        return Parsed(findings=problems)
    if not text.strip():
        return Parsed(findings=[finding("VAL-INPUT-005", "", source=source)])
    try:
        loaded = yaml.load(text, Loader=_NoAliasLoader)
    except _AliasRefused:
        return Parsed(findings=[finding("VAL-INPUT-006", "", source=source)])
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        return Parsed(findings=[finding("VAL-INPUT-003", "", f"invalid YAML{where}: {exc.problem}",
                                        source=source)])
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        # ValueError/OverflowError: PyYAML's timestamp/int constructors on values like 2024-13-45.
        return Parsed(findings=[finding("VAL-INPUT-003", "", f"invalid YAML: {str(exc)[:200]}",
                                        source=source)])
    except RecursionError:
        return Parsed(findings=[finding("VAL-INPUT-003", "", "invalid YAML: nested too deeply",
                                        source=source)])
    if loaded is None:
        return Parsed(findings=[finding("VAL-INPUT-005", "", source=source)])
    if not isinstance(loaded, dict):
        return Parsed(findings=[finding(
            "VAL-INPUT-004", "", f"the top level is a {type(loaded).__name__}, not a mapping",
            source=source)])
    plain = _plain(loaded)
    assert isinstance(plain, dict)
    return Parsed(value={str(k): v for k, v in plain.items()})


def as_mapping(value: object, *, source: str | None) -> Parsed:
    """An already-parsed document (e.g. a JSON body) checked to be a string-keyed mapping."""
    if not isinstance(value, Mapping):
        return Parsed(findings=[finding(
            "VAL-INPUT-004", "", f"the top level is a {type(value).__name__}, not a mapping", source=source)])
    return Parsed(value={str(k): _plain(v) for k, v in value.items()})


# pydantic error types -> finding codes. Custom errors raised by our validators carry the code as type.
_ERROR_CODES = {
    "missing": "VAL-REQ-001",
    "extra_forbidden": "VAL-INPUT-007",
    "literal_error": "VAL-ENUM-001",
    "enum": "VAL-ENUM-001",
    "greater_than": "VAL-RANGE-001",
    "greater_than_equal": "VAL-RANGE-001",
    "less_than": "VAL-RANGE-001",
    "less_than_equal": "VAL-RANGE-001",
}


def findings_from_validation_error(error: ValidationError, *,
                                   sources: Mapping[str, str] | None = None) -> list[Finding]:
    """Required-field, type, range and allowed-value findings from the model's validation errors.

    `sources` maps a top-level spec field to the file it came from (for Daylily imports)."""
    results: list[Finding] = []
    for item in error.errors(include_url=False):
        loc = tuple(part for part in item["loc"] if isinstance(part, int | str))
        kind = item["type"]
        code = kind if kind.startswith("VAL-") else _ERROR_CODES.get(kind, "VAL-TYPE-001")
        source = (sources or {}).get(str(loc[0])) if loc else None
        results.append(finding(code, field_path(loc), item["msg"], source=source))
    return results
