from __future__ import annotations

import pytest

from stamen.diagnostics.specificity import literal_specificity


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
