"""Top-1 accuracy of classify_error over the labelled corpus of real-world failure logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stamen.diagnostics import catalog, classify_error

MIN_ACCURACY = 0.95
MIN_CORPUS_SIZE = 120


def test_corpus_is_large_and_well_formed(corpus_items: list[dict[str, Any]]) -> None:
    assert len(corpus_items) >= MIN_CORPUS_SIZE
    ids = [item["id"] for item in corpus_items]
    assert len(ids) == len(set(ids)), "corpus ids must be unique"
    known_codes = {entry.code for entry in catalog()}
    unknown_labels = {item["expected"] for item in corpus_items} - known_codes
    assert not unknown_labels, f"corpus labels not in the catalog: {sorted(unknown_labels)}"
    for item in corpus_items:
        assert set(item) <= {"id", "text", "expected", "exit_code", "signal", "slurm_state"}, item["id"]


def test_corpus_top1_accuracy(
    corpus_items: list[dict[str, Any]], report_corpus_accuracy: Callable[[str], None]
) -> None:
    misclassified: list[str] = []
    for item in corpus_items:
        diagnosis = classify_error(
            item["text"],
            exit_code=item.get("exit_code"),
            signal=item.get("signal"),
            slurm_state=item.get("slurm_state"),
        )
        if diagnosis.top.code != item["expected"]:
            ranked = ", ".join(f"{c.code}={c.score:g}" for c in diagnosis.candidates[:3])
            misclassified.append(f"{item['id']}: expected {item['expected']}, got {ranked}")
    correct = len(corpus_items) - len(misclassified)
    accuracy = correct / len(corpus_items)
    summary = f"corpus top-1 accuracy: {accuracy:.3f} ({correct}/{len(corpus_items)})"
    print(summary)
    report_corpus_accuracy(summary)
    assert accuracy >= MIN_ACCURACY, summary + "\nmisclassified:\n  " + "\n  ".join(misclassified)


def test_corpus_exercises_most_of_the_catalog(corpus_items: list[dict[str, Any]]) -> None:
    # Guards against a corpus that only covers a handful of easy codes.
    labelled = {item["expected"] for item in corpus_items}
    all_codes = {entry.code for entry in catalog()}
    uncovered = all_codes - labelled
    assert len(uncovered) <= len(all_codes) // 10, f"codes without corpus examples: {sorted(uncovered)}"
