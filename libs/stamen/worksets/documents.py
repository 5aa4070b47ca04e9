"""Turning untrusted bytes into text and YAML mappings, with every failure a finding, never an exception.

Importers work on content handed to them (the caller does the I/O), so this is the one place that
deals with encodings, size limits and YAML's sharper edges.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from stamen.worksets.findings import Finding, field_path, finding
from stamen.worksets.limits import MAX_DOCUMENT_BYTES, MAX_MANIFEST_BYTES

# The limits of stamen.worksets.limits: anything bigger is not what the user meant to upload (the largest
# workset fits), and refusing early bounds the work done on hostile input.
MAX_YAML_BYTES = MAX_DOCUMENT_BYTES  # JSON documents share it
MAX_TSV_BYTES = MAX_MANIFEST_BYTES


@dataclass
class Parsed:
    """A parse outcome: `value` is set when parsing worked; `findings` says why when it did not."""

    value: dict[str, object] | None = None
    findings: list[Finding] = field(default_factory=list)


def decode_text(data: bytes | str, *, limit: int, source: str | None) -> tuple[str | None, list[Finding]]:
    """Bytes -> text, enforcing the size limit before decoding and accepting a UTF-8 byte order mark."""
    size = len(data.encode("utf-8", errors="surrogatepass")) if isinstance(data, str) else len(data)
    if size > limit:
        return None, [
            finding("VAL-INPUT-002", "", f"input is {size} bytes; the limit is {limit} bytes", source=source)
        ]
    if isinstance(data, str):
        return data, []
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        return None, [
            finding("VAL-INPUT-001", "", f"input is not UTF-8 (byte {exc.start} is invalid)", source=source)
        ]


# libyaml's parser when the wheel has it (5x faster on a 10,000-sample document); the constructor, where
# the checks below live, is Python either way.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc]
    """Safe loading that refuses what would be silently misread:

    - aliases (&a / *a): a few hundred bytes of nested aliases can expand to billions of nodes once anything
      walks the result ("billion laughs"); an alias is a node constructed a second time, refused then;
    - a key given twice in one mapping: YAML loaders keep the last value without a word."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            raise _AliasRefused
        return super().construct_object(node, deep)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        first_seen: dict[str, int] = {}  # by text: keys become strings, so `1` and "1" are the same key
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_seen:
                raise _DuplicateKey(key_node.value, line, first_seen[key_node.value])
            first_seen[key_node.value] = line
        return super().construct_mapping(node, deep)


class _AliasRefused(Exception):
    pass


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first_line: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line

    def finding(self, kind: str, source: str | None) -> Finding:
        return finding(
            "VAL-INPUT-009",
            self.key,
            f"line {self.line}: key {self.key!r} appears twice in the same "
            f"{kind} (first at line {self.first_line}); only one of the values can be meant",
            source=source,
        )


def _plain(value: object) -> object:
    """YAML timestamps become ISO strings so the spec sees text, as it would from JSON."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _document_text(data: bytes | str, *, source: str | None) -> tuple[str | None, list[Finding]]:
    """A document's text within the document limit, or why there is none (too large, not UTF-8, empty)."""
    text, problems = decode_text(data, limit=MAX_YAML_BYTES, source=source)
    if text is not None and not text.strip():
        return None, [finding("VAL-INPUT-005", "", source=source)]
    return text, problems


def load_yaml_mapping(data: bytes | str, *, source: str | None) -> Parsed:
    text, problems = _document_text(data, source=source)
    if text is None:
        return Parsed(findings=problems)
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)
    except _AliasRefused:
        return Parsed(findings=[finding("VAL-INPUT-006", "", source=source)])
    except _DuplicateKey as duplicate:
        return Parsed(findings=[duplicate.finding("mapping", source)])
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        return Parsed(
            findings=[finding("VAL-INPUT-003", "", f"invalid YAML{where}: {exc.problem}", source=source)]
        )
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        # ValueError/OverflowError: PyYAML's timestamp/int constructors on values like 2024-13-45.
        return Parsed(
            findings=[finding("VAL-INPUT-003", "", f"invalid YAML: {str(exc)[:200]}", source=source)]
        )
    except RecursionError:
        return Parsed(
            findings=[finding("VAL-INPUT-003", "", "invalid YAML: nested too deeply", source=source)]
        )
    if loaded is None:
        return Parsed(findings=[finding("VAL-INPUT-005", "", source=source)])
    if not isinstance(loaded, dict):
        return Parsed(
            findings=[
                finding(
                    "VAL-INPUT-004",
                    "",
                    f"the top level is a {type(loaded).__name__}, not a mapping",
                    source=source,
                )
            ]
        )
    plain = _plain(loaded)
    assert isinstance(plain, dict)
    return Parsed(value={str(k): v for k, v in plain.items()})


def load_json_mapping(data: bytes | str, *, source: str | None) -> Parsed:
    """A JSON document as a mapping; a key given twice in one object is refused with its line (JSON
    readers, Python's included, keep the last value without a word)."""
    text, problems = _document_text(data, source=source)
    if text is None:
        return Parsed(findings=problems)
    try:
        loaded = json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        return Parsed(
            findings=[
                finding(
                    "VAL-INPUT-003",
                    "",
                    f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    source=source,
                    fix="Fix the JSON syntax at the reported line and column.",
                )
            ]
        )
    except RecursionError:
        return Parsed(
            findings=[finding("VAL-INPUT-003", "", "invalid JSON: nested too deeply", source=source)]
        )
    except _DuplicateKey:
        return Parsed(findings=[_json_duplicate(text).finding("object", source)])
    return as_mapping(loaded, source=source)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey("", 0, 0)  # where: found by _json_duplicate, only on this (rare) path
    return result


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]')


def _json_duplicate(text: str) -> _DuplicateKey:
    """The first key given twice in one object of `text` (known to hold one), with both lines."""
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    open_objects: list[dict[str, int] | None] = []  # keys seen per open object; None for an array
    previous: re.Match[str] | None = None
    for token in _JSON_TOKEN.finditer(text):
        kind = token.group()
        if kind in ("{", "["):
            open_objects.append({} if kind == "{" else None)
        elif kind in ("}", "]"):
            open_objects.pop()
        elif kind == ":" and previous is not None and previous.group().startswith('"') and open_objects:
            keys = open_objects[-1]
            if keys is not None:
                key = json.loads(previous.group())
                line = bisect.bisect_left(newlines, previous.start()) + 1
                if key in keys:
                    return _DuplicateKey(key, line, keys[key])
                keys[key] = line
        previous = token
    return _DuplicateKey("?", 0, 0)  # unreachable for a document json.loads found a duplicate in


def as_mapping(value: object, *, source: str | None) -> Parsed:
    """An already-parsed document (e.g. a JSON body) checked to be a string-keyed mapping."""
    if not isinstance(value, Mapping):
        return Parsed(
            findings=[
                finding(
                    "VAL-INPUT-004",
                    "",
                    f"the top level is a {type(value).__name__}, not a mapping",
                    source=source,
                )
            ]
        )
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
    "finite_number": "VAL-TYPE-002",
}


def findings_from_validation_error(
    error: ValidationError, *, sources: Mapping[str, str] | None = None
) -> list[Finding]:
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
