"""Text the database cannot store, refused where it enters the API (TEXT_NOT_STORABLE, naming the field).

PostgreSQL refuses NUL in text and JSON, and an unpaired surrogate cannot be encoded as UTF-8 at all. Such
characters reach handlers through percent-decoded path and query values (`%00`), JSON escapes (`\\u0000`,
`\\ud800` in the documents parsed with the standard library), YAML escapes, and header bytes that are not
UTF-8 (aiohttp keeps them as surrogates). Every way in is checked here, so a UnicodeEncodeError or
a PostgreSQL character error further down is a server bug (500), not the client's fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from services.portal.api.errors import ApiError

CODE = "TEXT_NOT_STORABLE"


def problem_of(text: str) -> str | None:
    """What makes `text` unstorable (NUL, an unpaired surrogate), or None when it can be stored."""
    if "\x00" in text:
        return "a NUL character"
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return "an unpaired surrogate (text that is not valid Unicode, or bytes that are not UTF-8)"
    return None


def first_unstorable(value: Any, where: str) -> tuple[str, str] | None:
    """The first (field, problem) in a parsed value: strings, mapping keys and values, list items.

    `where` names the root (`body`, `query`, ...); fields read like `body.config.partition` and
    `body.samples[0].r1`. Iterative, so a deeply nested document cannot exhaust the stack."""
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            problem = problem_of(item)
            if problem is not None:
                return path, problem
        elif isinstance(item, BaseModel):
            pending.append((item.model_dump(mode="python"), path))
        elif isinstance(item, Mapping):
            for key, child in reversed(list(item.items())):
                label = str(key)
                problem = problem_of(label)
                if problem is not None:
                    return f"{path} (a key)", problem
                pending.append((child, f"{path}.{label}"))
        elif isinstance(item, list | tuple):
            pending.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def require_storable(value: Any, where: str) -> None:
    """Raise TEXT_NOT_STORABLE (400) naming the first field that holds unstorable text."""
    found = first_unstorable(value, where)
    if found is not None:
        field, problem = found
        raise ApiError(
            400,
            CODE,
            f"{field} holds {problem}, which cannot be stored; remove it and send the request again",
            {"field": field},
        )
