"""The classifier on real logs: verbatim excerpts of public tool output (tests/diagnostics/real/).

One source in four is held out by hashing the source (evaluation.split_of); catalog patterns are written
from the tuning split's failures only. The held-out excerpts of collection rounds 1-3 (held_out) were
measured while the catalog was tuned; those of later rounds (held_out_2) are measured once, and are the
split that must meet the targets of issue #14. Each test prints only its own split's figures, so running
the tuning test measures nothing held out. docs/errors.md carries the same figures (docgen computes them
from this corpus).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from stamen.diagnostics import catalog, evaluation, get_entry
from stamen.diagnostics.evaluation import (
    LAST_SEEN_ROUND,
    PENDING_ROUND,
    SPLITS,
    TARGET_CATEGORY_ACCURACY,
    TARGET_MAX_UNKNOWN_RATE,
    TARGET_RETRYABLE_ACCURACY,
    LabelledExcerpt,
    SplitScore,
    evaluate,
    load_corpus,
    parse_corpus,
    split_of,
    wilson_interval,
)

MIN_EXCERPTS = 750
# Tools the issue names; each must be represented.
REQUIRED_TOOLS = {
    "slurm", "snakemake", "nextflow", "samtools", "bwa", "gatk", "picard", "deepvariant", "fastp",
    "cutadapt", "star", "sra-toolkit", "aws-sdk", "aws-cli", "parallelcluster", "curl", "wget", "daylily",
}  # fmt: skip
SOURCE = re.compile(r"^[\w.-]+/[\w.-]+(#\d+|:\S.*)$")


@pytest.fixture(scope="module")
def excerpts() -> list[LabelledExcerpt]:
    return load_corpus()


@pytest.fixture(scope="module")
def scores(excerpts: list[LabelledExcerpt]) -> dict[str, SplitScore]:
    return evaluate(excerpts)


def test_the_corpus_is_large_labelled_with_catalog_codes_and_sourced(excerpts: list[LabelledExcerpt]) -> None:
    assert len(excerpts) >= MIN_EXCERPTS
    codes = {entry.code for entry in catalog()}
    problems = [e.source for e in excerpts if e.code not in codes or not SOURCE.match(e.source)]
    assert not problems, problems
    # The label's category is its code's; the retry class is labelled on its own (docs/errors.md).
    assert not [e.source for e in excerpts if get_entry(e.code).category is not e.category]
    assert not [e.source for e in excerpts if not e.text.strip()]
    assert REQUIRED_TOOLS <= {e.tool for e in excerpts}
    texts = Counter(e.text.strip() for e in excerpts)
    assert not [t for t, n in texts.items() if n > 1], "an excerpt is in the corpus twice"


def test_the_split_is_a_fixed_function_of_the_source(excerpts: list[LabelledExcerpt]) -> None:
    # Pinned: changing split_of would silently move held-out excerpts into tuning.
    assert split_of("slurm/slurm#1") == split_of(" slurm/slurm#1 ")
    assert [split_of(f"owner/repo#{n}") for n in range(8)] == [
        "held_out", "tuning", "held_out", "held_out", "held_out", "tuning", "tuning", "tuning",
    ]  # fmt: skip
    held_out = [e for e in excerpts if e.split != "tuning"]
    assert len(held_out) >= len(excerpts) // 5  # about a quarter
    # Only excerpts of a round after the seen ones carry a round, and only they can be in held_out_2.
    assert all(e.collection_round > LAST_SEEN_ROUND for e in excerpts if e.collection_round is not None)
    assert all(e.collection_round is not None for e in excerpts if e.split == "held_out_2")
    # A round still being tuned on keeps its held-out excerpts out of every score until its measurement.
    pending = [e for e in excerpts if e.split == "held_out_pending"]
    assert all(e.collection_round == PENDING_ROUND for e in pending)
    assert len(pending) == sum(
        PENDING_ROUND is not None and e.collection_round == PENDING_ROUND and split_of(e.source) == "held_out"
        for e in excerpts
    )


def _report(score: SplitScore, report_corpus_accuracy: Any) -> str:
    summary = f"real logs: {score.summary()}"
    print(summary)
    report_corpus_accuracy(summary)
    return summary


def test_tuning_split_meets_the_targets(scores: dict[str, SplitScore], report_corpus_accuracy: Any) -> None:
    tuning = scores["tuning"]
    summary = _report(tuning, report_corpus_accuracy)
    assert tuning.meets_targets, (
        summary + "\nfailures:\n  " + "\n  ".join(o.describe() for o in tuning.failures())
    )


def _assert_meets_targets(held_out: SplitScore) -> None:
    # Only aggregate figures: listing the held-out failures would invite tuning on them.
    assert held_out.size > 0
    assert held_out.category_accuracy >= TARGET_CATEGORY_ACCURACY, held_out.summary()
    assert held_out.retryable_accuracy >= TARGET_RETRYABLE_ACCURACY, held_out.summary()
    assert held_out.unknown_rate < TARGET_MAX_UNKNOWN_RATE, held_out.summary()


# The held-out excerpts of rounds 1-3: measured several times while the catalog was tuned (never their
# failures), so they are reported but no longer the test of the targets. Strict: if they come to meet
# the targets, the marker has to go.
@pytest.mark.xfail(
    strict=True, reason="rounds 1-3 held-out split below the issue #14 targets; see docs/errors.md"
)
def test_seen_held_out_split_meets_the_targets(
    scores: dict[str, SplitScore], report_corpus_accuracy: Any
) -> None:
    _report(scores["held_out"], report_corpus_accuracy)
    _assert_meets_targets(scores["held_out"])


# The held-out excerpts of later rounds (collection rounds 4 and 5), never tuned on: each round's were
# measured once, after the tuning on that round's tuning excerpts; with round 5 the split was 90.1% / 95.6% /
# 2.2% (n=91, README's measurement log), at the targets by one excerpt, so this is an assertion. Only its
# aggregate figures are printed; its failures are never listed.
def test_held_out_2_split_meets_the_targets(
    scores: dict[str, SplitScore], report_corpus_accuracy: Any
) -> None:
    _report(scores["held_out_2"], report_corpus_accuracy)
    _assert_meets_targets(scores["held_out_2"])


def test_a_pending_rounds_held_out_excerpts_are_scored_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    item = (
        "  - source: owner/repo#{n}\n    round: 5\n    tool: slurm\n    category: cluster\n"
        "    retry_class: transient\n    code: WS-CLU-007\n    text: 'slurm_load_jobs error: {n}'\n"
    )
    document = "items:\n" + item.format(n=0) + item.format(n=1)  # owner/repo#0 is held out, #1 not
    monkeypatch.setattr(evaluation, "PENDING_ROUND", 5)
    excerpts = parse_corpus(document)
    assert [e.split for e in excerpts] == ["held_out_pending", "tuning"]
    scores = evaluate(excerpts)
    assert set(scores) == set(SPLITS)
    assert [scores[split].size for split in SPLITS] == [1, 0, 0]
    # Once the round is measured its held-out excerpts are held_out_2.
    monkeypatch.setattr(evaluation, "PENDING_ROUND", None)
    assert [e.split for e in parse_corpus(document)] == ["held_out_2", "tuning"]


def test_the_interval_says_how_little_a_small_split_pins_down() -> None:
    # Round 4's 27/30: "roughly 74% to 97%" (README); ten times the excerpts narrow it about threefold.
    low, high = wilson_interval(27, 30)
    assert (round(low, 2), round(high, 2)) == (0.74, 0.97)
    narrow_low, narrow_high = wilson_interval(270, 300)
    assert narrow_high - narrow_low < (high - low) / 2.5
    assert wilson_interval(0, 0) == (0.0, 1.0)
