"""Estimate how specific a regular expression is, for ranking catalog matches.

The measure is the minimum number of literal characters any match must contain: a pattern
that pins down ``fail to locate the index files`` says more than one that pins down
``error``.  Alternation counts its weakest branch and optional atoms count nothing, so
padding a pattern with optional text does not make it look more specific.
"""

from __future__ import annotations

_METACHARACTERS = frozenset(".^$")


def literal_specificity(pattern: str) -> int:
    """Return the minimum count of literal characters a match of ``pattern`` must contain."""
    value, _ = _parse_alternation(pattern, 0)
    return max(value, 0)


def _parse_alternation(pattern: str, index: int) -> tuple[int, int]:
    branches: list[int] = []
    while True:
        value, index = _parse_sequence(pattern, index)
        branches.append(value)
        if index < len(pattern) and pattern[index] == "|":
            index += 1
            continue
        return min(branches), index


def _parse_sequence(pattern: str, index: int) -> tuple[int, int]:
    total = 0
    last_atom = 0
    while index < len(pattern):
        char = pattern[index]
        if char in "|)":
            break
        if char == "\\":
            escaped = pattern[index + 1] if index + 1 < len(pattern) else ""
            # \d, \s, \b, \1 ... are classes, anchors or backreferences, not literals.
            last_atom = 0 if escaped.isalnum() else 1
            index += 2
        elif char == "[":
            last_atom = 0
            index = _skip_character_class(pattern, index)
        elif char == "(":
            last_atom, index = _parse_group(pattern, index)
        elif char in "*?":
            total -= last_atom
            last_atom = 0
            index += 1
        elif char == "+":
            last_atom = 0
            index += 1
        elif char == "{":
            end = pattern.find("}", index)
            if end == -1:
                last_atom = 1
                index += 1
            else:
                if pattern[index + 1 : end].split(",")[0].strip() in ("", "0"):
                    total -= last_atom
                last_atom = 0
                index = end + 1
        elif char in _METACHARACTERS:
            last_atom = 0
            index += 1
        else:
            last_atom = 1
            index += 1
        total += last_atom
    return total, index


def _parse_group(pattern: str, index: int) -> tuple[int, int]:
    index += 1  # opening parenthesis
    counts = True
    if pattern.startswith("?", index):
        rest = pattern[index + 1 :]
        if rest.startswith(("!", "<!", "=", "<=")):
            counts = False  # lookarounds consume nothing
            index += 2 if rest[0] in "!=" else 3
        elif rest.startswith("P<"):
            index = pattern.index(">", index) + 1
        elif rest.startswith(":"):
            index += 2
        else:
            # Inline flags such as (?i) or (?i:...).
            index += 1
            while index < len(pattern) and pattern[index] not in ":)":
                index += 1
            if index < len(pattern) and pattern[index] == ")":
                return 0, index + 1
            index += 1
    value, index = _parse_alternation(pattern, index)
    index += 1  # closing parenthesis
    return (value if counts else 0), index


def _skip_character_class(pattern: str, index: int) -> int:
    index += 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1  # a leading ] is a literal member
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1
