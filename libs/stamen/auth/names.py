"""The one rule for the names people give their credentials (API keys, NATS credentials)."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[\w .:@/-]{1,100}$")
NAME_RULE = "name must be 1-100 letters, digits, spaces or . : @ / - _"


def credential_name(name: str) -> str:
    """The name, stripped; ValueError(NAME_RULE) when it breaks the rule."""
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValueError(NAME_RULE)
    return name
