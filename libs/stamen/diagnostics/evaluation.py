"""Measure the classifier on labelled real-world failure excerpts (tests/diagnostics/real/).

The held-out split is a pure function of an excerpt's source (its repository and issue, or its
repository and path), decided before any excerpt was collected: every excerpt of one thread lands in
the same split, so a pattern written for the tuning split cannot have been read off its held-out twin.
Catalog patterns are tuned on the ``tuning`` split only; the held-out splits are only measured.

The held-out excerpts of collection rounds 1-3 (``held_out``) had their aggregate figures printed
several times while the catalog was tuned; the held-out excerpts of later rounds form ``held_out_2``,
which no figure had been printed for before its one measurement (tests/diagnostics/real/README.md).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stamen.diagnostics.catalog import UNKNOWN_CODE
from stamen.diagnostics.classifier import Diagnosis, classify_error
from stamen.diagnostics.codes import ErrorCategory, RetryClass

Split = Literal["tuning", "held_out", "held_out_2", "held_out_pending"]
# The splits that are scored and reported; ``held_out_pending`` is neither.
SPLITS: tuple[Split, ...] = ("tuning", "held_out", "held_out_2")
HELD_OUT_BUCKETS = 4  # one source in four is held out
# The last collection round whose held-out excerpts were measured while the catalog was being tuned.
LAST_SEEN_ROUND = 3
# A collection round still being collected and tuned on: its held-out excerpts are in the corpus but
# classified by no test and no report until the round's one measurement, when this becomes None and
# they join held_out_2. Without it, landing a batch would measure held_out_2 (the suite, docs/errors.md).
# Round 5 was measured (tests/diagnostics/real/README.md); the next round sets its number here first.
PENDING_ROUND: int | None = None

# What the held-out split must reach (issue #14).
TARGET_CATEGORY_ACCURACY = 0.90
TARGET_RETRYABLE_ACCURACY = 0.95
TARGET_MAX_UNKNOWN_RATE = 0.05

# tests/diagnostics/real/corpus.yaml, found from this file in a source checkout.
DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "tests" / "diagnostics" / "real" / "corpus.yaml"


def split_of(source: str) -> Literal["tuning", "held_out"]:
    """``held_out`` for one source in four, by the SHA-256 of the source string; else ``tuning``."""
    digest = hashlib.sha256(source.strip().encode("utf-8")).digest()
    return "held_out" if int.from_bytes(digest[:8], "big") % HELD_OUT_BUCKETS == 0 else "tuning"


@dataclass(frozen=True, slots=True)
class LabelledExcerpt:
    """One verbatim excerpt of real tool output and what a careful reader concludes from it."""

    source: str  # owner/repo#issue or owner/repo:path
    tool: str
    category: ErrorCategory
    retry_class: RetryClass
    code: str
    text: str
    collection_round: int | None = None  # None: one of rounds 1-3, which the corpus did not record

    @property
    def split(self) -> Split:
        split = split_of(self.source)
        if (
            split == "held_out"
            and self.collection_round is not None
            and self.collection_round == PENDING_ROUND
        ):
            return "held_out_pending"
        if split == "held_out" and (self.collection_round or 0) > LAST_SEEN_ROUND:
            return "held_out_2"
        return split


def parse_corpus(document: str) -> list[LabelledExcerpt]:
    """Excerpts from the corpus YAML (a mapping with an ``items`` list)."""
    raw: Any = yaml.safe_load(document)
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise ValueError("a real-log corpus is a mapping with an 'items' list")
    excerpts: list[LabelledExcerpt] = []
    for index, item in enumerate(raw["items"]):
        if not isinstance(item, dict):
            raise ValueError(f"corpus item {index} is not a mapping")
        expected = {"source", "tool", "category", "retry_class", "code", "text"}
        if not expected <= set(item) <= expected | {"round"}:
            raise ValueError(
                f"corpus item {index} must have exactly the keys {sorted(expected)} and optionally 'round'"
            )
        collection_round = item.get("round")
        if collection_round is not None and (
            not isinstance(collection_round, int) or collection_round <= LAST_SEEN_ROUND
        ):
            raise ValueError(f"corpus item {index}: 'round' is a collection round after {LAST_SEEN_ROUND}")
        excerpts.append(
            LabelledExcerpt(
                source=str(item["source"]),
                tool=str(item["tool"]),
                category=ErrorCategory(item["category"]),
                retry_class=RetryClass(item["retry_class"]),
                code=str(item["code"]),
                text=str(item["text"]),
                collection_round=collection_round,
            )
        )
    return excerpts


def load_corpus(path: Path = DEFAULT_CORPUS) -> list[LabelledExcerpt]:
    return parse_corpus(path.read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Outcome:
    excerpt: LabelledExcerpt
    diagnosis: Diagnosis

    @property
    def unknown(self) -> bool:
        return self.diagnosis.top.code == UNKNOWN_CODE

    @property
    def category_correct(self) -> bool:
        return self.diagnosis.top.category is self.excerpt.category

    @property
    def retryable_correct(self) -> bool:
        return self.diagnosis.top.retry_class.is_retryable == self.excerpt.retry_class.is_retryable

    @property
    def code_correct(self) -> bool:
        return self.diagnosis.top.code == self.excerpt.code

    def describe(self) -> str:
        ranked = ", ".join(f"{c.code}={c.score:g}" for c in self.diagnosis.candidates[:3])
        return (
            f"{self.excerpt.source} [{self.excerpt.tool}]: expected {self.excerpt.code} "
            f"({self.excerpt.category.value}/{self.excerpt.retry_class.value}), got {ranked}"
        )


@dataclass(slots=True)
class SplitScore:
    split: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.outcomes)

    def _rate(self, hits: Iterable[bool]) -> float:
        return sum(hits) / self.size if self.size else 0.0

    @property
    def category_accuracy(self) -> float:
        return self._rate(o.category_correct for o in self.outcomes)

    @property
    def retryable_accuracy(self) -> float:
        return self._rate(o.retryable_correct for o in self.outcomes)

    @property
    def code_accuracy(self) -> float:
        return self._rate(o.code_correct for o in self.outcomes)

    @property
    def unknown_rate(self) -> float:
        return self._rate(o.unknown for o in self.outcomes)

    @property
    def meets_targets(self) -> bool:
        return (
            self.category_accuracy >= TARGET_CATEGORY_ACCURACY
            and self.retryable_accuracy >= TARGET_RETRYABLE_ACCURACY
            and self.unknown_rate < TARGET_MAX_UNKNOWN_RATE
        )

    def failures(self) -> list[Outcome]:
        """Outcomes wrong on category or on retryability (what the targets measure)."""
        return [o for o in self.outcomes if not (o.category_correct and o.retryable_correct)]

    def summary(self) -> str:
        return (
            f"{self.split}: n={self.size} category top-1 {self.category_accuracy:.1%}, "
            f"retryable {self.retryable_accuracy:.1%}, unknown {self.unknown_rate:.1%}, "
            f"code top-1 {self.code_accuracy:.1%}"
        )


def wilson_interval(hits: int, size: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for the default ``z``) of a proportion ``hits / size``: how far a
    split's figure could be from the catalog's accuracy on logs like it, given how few excerpts it has."""
    if size <= 0:
        return (0.0, 1.0)
    rate = hits / size
    denominator = 1 + z * z / size
    centre = (rate + z * z / (2 * size)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / size + z * z / (4 * size * size)) / denominator
    return (max(0.0, centre - half_width), min(1.0, centre + half_width))


def evaluate(excerpts: Sequence[LabelledExcerpt]) -> dict[str, SplitScore]:
    """Classify every excerpt on its text alone; scores per reported split (pending excerpts are not
    classified at all)."""
    scores: dict[str, SplitScore] = {split: SplitScore(split) for split in SPLITS}
    for excerpt in excerpts:
        if excerpt.split in scores:
            scores[excerpt.split].outcomes.append(Outcome(excerpt, classify_error(excerpt.text)))
    return scores


def sources_per_tool(excerpts: Sequence[LabelledExcerpt]) -> dict[str, dict[str, int]]:
    """Excerpt counts per tool and split, tools ordered by total count then name."""
    counts: Counter[tuple[str, str]] = Counter((e.tool, e.split) for e in excerpts)
    tools = sorted(
        {e.tool for e in excerpts}, key=lambda tool: (-sum(counts[(tool, s)] for s in SPLITS), tool)
    )
    return {tool: {split: counts[(tool, split)] for split in SPLITS} for tool in tools}
