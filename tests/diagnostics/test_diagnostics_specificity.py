from __future__ import annotations

from typing import Any

import pytest

from stamen.diagnostics import catalog
from stamen.diagnostics.specificity import literal_specificity, required_literals


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("error", 5),
        ("fail to locate the index files", 30),
        (r"\[Errno 28\]", 10),  # escaped punctuation is literal
        (r"\d+ reads", 6),  # \d is a class, not a literal
        ("a|bcdef", 1),  # alternation counts its weakest branch
        ("(?:foo|barbaz)qux", 6),
        ("(?i)abc", 3),  # inline flags are not text
        ("ab?c", 2),  # optional atoms count nothing
        ("a(bc)?d", 2),
        ("a{0,3}b", 1),
        ("ab{2}c", 3),
        ("[abc]+d", 1),
        ("x(?!y)z", 2),  # lookarounds consume nothing
        ("(?P<name>abc)d", 4),
        ("^.*$", 0),
    ],
)
def test_literal_specificity(pattern: str, expected: int) -> None:
    assert literal_specificity(pattern) == expected


def test_longer_literal_is_more_specific() -> None:
    assert literal_specificity("fail to locate the index files") > literal_specificity("fail")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("No space left on device", ("no space left on device",)),  # lower-cased
        (r"An error occurred \(\w+\) when calling", ("an error occurred (",)),  # the longest run
        (r"\b(ECONN\w+|EPIPE)\b", ("econn", "epipe")),  # a required group: one of its branches
        (r"(^|\s)Killed\s*$", ("killed",)),  # an optional-looking group with no text is skipped
        ("fail(ed)? to open", (" to open",)),  # optional text is not required
        ("ab?c", ("a",)),
        ("a+b", ("a",)),  # a repeated atom ends the run
        ("x{0,2}yz", ("yz",)),
        (r"Missing .?\+.? line", ("missing ",)),
        ("a|", None),  # an empty branch matches anything
        ("(?i)abc", None),  # inline flags: no pre-test, the regex decides
        (r"\x41bc", None),
        ("[A-Z]+_x", ("_x",)),
    ],
)
def test_required_literals(pattern: str, expected: tuple[str, ...] | None) -> None:
    assert required_literals(pattern) == expected


def test_the_literal_pre_test_never_rules_out_a_match(corpus_items: list[dict[str, Any]]) -> None:
    # Every catalog pattern against every line of the hand-written corpus: wherever the regex
    # matches, one of its required literals is in the lower-cased line.
    lines = {line for item in corpus_items for line in item["text"].splitlines() if line.strip()}
    checked = 0
    for entry in catalog():
        for pattern in entry.match.compiled_patterns:
            for line in lines:
                if pattern.regex.search(line):
                    checked += 1
                    assert pattern.may_match(line.lower()), (entry.code, pattern.source, line)
    assert checked > len(corpus_items)
