"""The operations a server offers, read from its OpenAPI document, and requests built from them.

Nothing here knows a route: every operation the server documents is callable by its operationId, so a
route added to the server is covered without a CLI change."""

from __future__ import annotations

import difflib
import json
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from stamen.remote.errors import RemoteError

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
JSON = "application/json"
YAML = "application/yaml"


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path | query | header | cookie
    required: bool
    description: str = ""


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # the template, e.g. /api/v1/worksets/{workset_id}
    summary: str
    parameters: tuple[Parameter, ...]
    body_media: tuple[str, ...]  # media types the request body may have; empty: no body
    body_required: bool
    public: bool  # the document says no credentials are needed

    def params(self, location: str) -> list[Parameter]:
        return [p for p in self.parameters if p.location == location]

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation_id": self.operation_id,
            "method": self.method,
            "path": self.path,
            "summary": self.summary,
            "path_params": [p.name for p in self.params("path")],
            "query_params": [p.name for p in self.params("query")],
            "body": list(self.body_media),
            "public": self.public,
        }


def _parameters(raw: Iterable[Any]) -> list[Parameter]:
    return [
        Parameter(str(p["name"]), str(p["in"]), bool(p.get("required", False)), str(p.get("description", "")))
        for p in raw
        if isinstance(p, dict) and "name" in p and "in" in p  # a $ref parameter is not followed
    ]


def parse_operations(document: Mapping[str, Any]) -> list[Operation]:
    """Every operation with an operationId, in the document's order."""
    default_security = document.get("security")
    ops: list[Operation] = []
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = _parameters(item.get("parameters") or [])
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict) or not op.get("operationId"):
                continue
            own = _parameters(op.get("parameters") or [])
            names = {(p.name, p.location) for p in own}
            body = op.get("requestBody") or {}
            security = op.get("security", default_security)
            ops.append(
                Operation(
                    operation_id=str(op["operationId"]),
                    method=method.upper(),
                    path=str(path),
                    summary=str(op.get("summary", "")),
                    parameters=tuple([p for p in shared if (p.name, p.location) not in names] + own),
                    body_media=tuple(body.get("content") or {}),
                    body_required=bool(body.get("required", False)),
                    public=security == [],
                )
            )
    return ops


def find(operations: Sequence[Operation], operation_id: str) -> Operation:
    for op in operations:
        if op.operation_id == operation_id:
            return op
    ids = [op.operation_id for op in operations]
    close = difflib.get_close_matches(operation_id, ids, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `stamen api ls` lists them"
    raise RemoteError(
        "OPERATION_UNKNOWN",
        f"the server has no operation {operation_id!r}{hint}",
        {"operation_id": operation_id, "suggestions": close},
    )


def parse_pairs(values: Iterable[str], option: str) -> list[tuple[str, str]]:
    """`name=value` arguments of --path, --query or --header, in order (a name may repeat)."""
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip():
            raise RemoteError(
                "PARAMETER_MALFORMED",
                f"{option} {value!r} is not NAME=VALUE (e.g. {option} workset_id=ws-123)",
                {"option": option, "value": value},
            )
        pairs.append((name.strip(), rest))
    return pairs


def fill_path(op: Operation, values: Sequence[tuple[str, str]]) -> str:
    wanted = [p.name for p in op.params("path")]
    given = dict(values)
    unknown = sorted(set(given) - set(wanted))
    if unknown:
        takes = ", ".join(wanted) or "none"
        raise RemoteError(
            "PATH_PARAMETER_UNKNOWN",
            f"{op.operation_id} ({op.method} {op.path}) has no path parameter {', '.join(unknown)}; "
            f"it takes: {takes}",
            {"operation_id": op.operation_id, "unknown": unknown, "path_params": wanted},
        )
    missing = [name for name in wanted if not given.get(name)]
    if missing:
        flags = " ".join(f"--path {name}=VALUE" for name in missing)
        raise RemoteError(
            "PATH_PARAMETER_MISSING",
            f"{op.operation_id} ({op.method} {op.path}) needs the path parameter "
            f"{', '.join(missing)}: add {flags}",
            {"operation_id": op.operation_id, "missing": missing, "path": op.path},
        )
    path = op.path
    for name in wanted:
        # Quoted whole: a value with a slash stays one path segment instead of reaching another route.
        path = path.replace("{" + name + "}", urllib.parse.quote(given[name], safe=""))
    return path


def query_string(op: Operation, values: Sequence[tuple[str, str]]) -> str:
    accepted = [p.name for p in op.params("query")]
    unknown = sorted({name for name, _ in values} - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "none"
        raise RemoteError(
            "QUERY_PARAMETER_UNKNOWN",
            f"{op.operation_id} has no query parameter {', '.join(unknown)}; it takes: {takes}",
            {"operation_id": op.operation_id, "unknown": unknown, "query_params": accepted},
        )
    missing = [p.name for p in op.params("query") if p.required and p.name not in dict(values)]
    if missing:
        raise RemoteError(
            "QUERY_PARAMETER_MISSING",
            f"{op.operation_id} needs the query parameter {', '.join(missing)}: add "
            + " ".join(f"--query {name}=VALUE" for name in missing),
            {"operation_id": op.operation_id, "missing": missing},
        )
    return urllib.parse.urlencode(list(values))


@dataclass(frozen=True)
class Body:
    data: bytes
    media: str


def _parse_document(text: str, source: str, *, as_yaml: bool) -> Any:
    try:
        return yaml.safe_load(text) if as_yaml else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        kind = "YAML/JSON" if as_yaml else "JSON"
        raise RemoteError(
            "BODY_INVALID", f"{source} is not valid {kind}: {exc}", {"source": source}
        ) from None


def read_body(argument: str, op: Operation, stdin: TextIO | None = None) -> Body:
    """--body JSON, or --body @file.json / @file.yaml / @- (standard input).

    A YAML file for an operation that takes YAML is sent as it is, so the server's messages point at its
    own lines; otherwise the document is sent as JSON."""
    if not op.body_media:
        raise RemoteError(
            "BODY_NOT_ACCEPTED",
            f"{op.operation_id} ({op.method} {op.path}) takes no request body; drop --body",
            {"operation_id": op.operation_id},
        )
    if argument.startswith("@"):
        name = argument[1:]
        if name == "-":
            text, source, as_yaml = (stdin or sys.stdin).read(), "standard input", True
        else:
            path = Path(name).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise RemoteError(
                    "FILE_UNREADABLE", f"{path}: {exc.strerror or exc}", {"path": str(path)}
                ) from None
            except UnicodeDecodeError as exc:
                raise RemoteError(
                    "BODY_INVALID", f"{path} is not UTF-8 text: {exc}", {"path": str(path)}
                ) from None
            source, as_yaml = str(path), path.suffix.lower() != ".json"
        document = _parse_document(text, source, as_yaml=as_yaml)
        if as_yaml and YAML in op.body_media:
            return Body(text.encode(), YAML)
    else:
        document = _parse_document(argument, "--body", as_yaml=False)
    if JSON in op.body_media:
        return Body(json.dumps(document).encode(), JSON)
    if YAML in op.body_media:
        return Body(yaml.safe_dump(document, sort_keys=False).encode(), YAML)
    raise RemoteError(
        "BODY_MEDIA_UNSUPPORTED",
        f"{op.operation_id} takes {', '.join(op.body_media)}; this CLI sends JSON or YAML only",
        {"operation_id": op.operation_id, "media": list(op.body_media)},
    )


def json_body(document: Any) -> Body:
    return Body(json.dumps(document).encode(), JSON)
