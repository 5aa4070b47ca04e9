"""Estimate how specific a regular expression is, for ranking catalog matches.

The measure is the minimum number of literal characters any match must contain: a pattern
that pins down ``fail to locate the index files`` says more than one that pins down
``error``.  Alternation counts its weakest branch and optional atoms count nothing, so
padding a pattern with optional text does not make it look more specific.
"""

from __future__ import annotations

import re

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


# ---------------------------------------------------------------- required literals
# A cheap pre-test for a pattern: texts that contain none of these strings cannot match it, so the
# regex need not run. Catalog patterns are case-insensitive, so the strings are lower-cased and
# compared with the lower-cased text (exact for ASCII; the rare non-ASCII case folds that
# re.IGNORECASE knows and str.lower() does not, like the long s for 's', are not in tool output).

_QUANTIFIER = re.compile(r"[*+?]|\{\d*(,\d*)?\}")
_UNSUPPORTED_ESCAPES = frozenset("xuUN0123456789")

Requirement = tuple[str, ...]  # any one of these must occur


def required_literals(pattern: str) -> Requirement | None:
    """Lower-cased strings one of which every match of ``pattern`` contains; None if none is known."""
    try:
        requirement, _ = _required_alternation(pattern, 0)
    except _Unsupported:
        return None
    return requirement


class _Unsupported(Exception):
    pass


def _strength(requirement: Requirement) -> int:
    return min(len(text) for text in requirement)


def _required_alternation(pattern: str, index: int) -> tuple[Requirement | None, int]:
    branches: list[Requirement | None] = []
    while True:
        requirement, index = _required_sequence(pattern, index)
        branches.append(requirement)
        if index < len(pattern) and pattern[index] == "|":
            index += 1
            continue
        break
    if any(branch is None for branch in branches):
        return None, index
    merged = tuple(dict.fromkeys(text for branch in branches if branch for text in branch))
    return merged, index


def _quantifier_at(pattern: str, index: int) -> tuple[bool, int]:
    """(whether the preceding atom may be absent, index after the quantifier) at ``index``."""
    found = _QUANTIFIER.match(pattern, index)
    if found is None:
        return False, index
    text = found.group()
    at_least = text[1:].split(",")[0].rstrip("}") if text.startswith("{") else ""
    optional = text in ("*", "?") or (text.startswith("{") and at_least in ("", "0"))
    end = found.end()
    if end < len(pattern) and pattern[end] in "?+":  # lazy or possessive
        end += 1
    return optional, end


def _required_sequence(pattern: str, index: int) -> tuple[Requirement | None, int]:
    best: Requirement | None = None
    run: list[str] = []

    def keep(candidate: Requirement | None) -> None:
        nonlocal best
        if candidate and all(candidate) and (best is None or _strength(candidate) > _strength(best)):
            best = candidate

    def flush() -> None:
        if run:
            keep(("".join(run).lower(),))
            run.clear()

    while index < len(pattern) and pattern[index] not in "|)":
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1] if index + 1 < len(pattern) else ""
            if escaped in _UNSUPPORTED_ESCAPES:
                raise _Unsupported(pattern)
            index += 2
            if escaped.isalnum():  # a class (\d, \s, \w) or an anchor (\b, \A): no text
                flush()
                index = _quantifier_at(pattern, index)[1]
                continue
            literal = escaped
        elif char == "[":
            flush()
            index = _quantifier_at(pattern, _skip_character_class(pattern, index))[1]
            continue
        elif char == "(":
            flush()
            inner, index = _required_group(pattern, index)
            optional, index = _quantifier_at(pattern, index)
            if not optional:
                keep(inner)
            continue
        elif char in ".^$":
            flush()
            index = _quantifier_at(pattern, index + 1)[1]
            continue
        else:
            literal = char
            index += 1
        optional, after = _quantifier_at(pattern, index)
        if after == index:
            run.append(literal)
            continue
        if not optional:  # "a+" or "a{2}": the character is there, but what follows may not be next
            run.append(literal)
        flush()
        index = after
    flush()
    return best, index


def _required_group(pattern: str, index: int) -> tuple[Requirement | None, int]:
    index += 1  # opening parenthesis
    counts = True
    if pattern.startswith("?", index):
        rest = pattern[index + 1 :]
        if rest.startswith(("!", "<!", "=", "<=")):
            counts = False
            index += 2 if rest[0] in "!=" else 3
        elif rest.startswith("P<"):
            index = pattern.index(">", index) + 1
        elif rest.startswith(":"):
            index += 2
        else:
            raise _Unsupported(pattern)  # inline flags: leave such patterns to the regex alone
    requirement, index = _required_alternation(pattern, index)
    return (requirement if counts else None), index + 1
