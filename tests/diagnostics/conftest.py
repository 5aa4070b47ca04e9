"""Shared fixtures for diagnostics tests, and a terminal line reporting corpus accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures"
_ACCURACY_KEY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def corpus_items() -> list[dict[str, Any]]:
    document = yaml.safe_load((FIXTURES / "corpus.yaml").read_text(encoding="utf-8"))
    items: list[dict[str, Any]] = document["items"]
    return items


@pytest.fixture
def report_corpus_accuracy(request: pytest.FixtureRequest) -> Any:
    """Call with a summary line; it is printed in pytest's terminal summary even under -q."""

    def record(line: str) -> None:
        lines = request.config.stash.setdefault(_ACCURACY_KEY, [])
        if line not in lines:
            lines.append(line)

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_ACCURACY_KEY, [])
    if lines:
        terminalreporter.write_sep("-", "diagnostics corpus")
        for line in lines:
            terminalreporter.write_line(line)
