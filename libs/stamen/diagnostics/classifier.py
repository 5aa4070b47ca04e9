"""Match failure evidence (log text, exit code, signal, job state) against the catalog.

Scoring, highest first:

* a job state is what a scheduler itself concluded (Slurm's, or stamen's own MAX_DURATION and
  LOST), so it weighs most;
* a matched log pattern weighs by its literal specificity (see ``specificity.py``), with a
  small bonus for each further pattern of the same entry that matched other lines;
* a signal, or an exit code other than the generic 1/2/255, is strong corroboration;
  a generic exit code is only a nudge;
* a ``hint_patterns`` wording (generic, no tool's vocabulary behind it) counts only when no
  other evidence gave a candidate: a log the catalog does not know gets its most likely
  category, marked ``from_hints`` (low confidence), instead of WS-UNK-000;
* an entry's tier bounds its pattern weight (and a cause entry's ``family_patterns``, wordings
  such as an errno text that name only the kind of failure, weigh as a family when nothing else
  of the entry matched): a ``family`` match (a tool's or a category's
  vocabulary, e.g. any ``sbatch: error:`` line or an AWS error envelope) weighs a fixed amount
  just under the weakest ``cause`` match, a ``wrapper`` match a fixed amount below a specific
  exit code.

Wrappers and causes.  A workflow engine reports a failed step with a *wrapper* message
("Error in rule", "Process `X` terminated with an error exit status (137)", a Python
``CalledProcessError``); the tool's own message nearer the failure is the *cause*.  Wrapper
entries are in the ``wrapper`` tier, so any matched cause, or even a family that only tells the
kind of failure, outranks them; a family match is still a better answer than no diagnosis, and its
retry class is its category's usual one.  When the caller knows no exit
code, the exit status a wrapper reports in the log (the last one) stands in for it, so
"exit status (137)" counts as an exit code 137 — which is how an out-of-memory kill behind a
Nextflow or Snakemake wrapper is recognised when the tool itself printed nothing.

Ranking is a pure function of the evidence: candidates are ordered by score, then by the
specificity of their best pattern, then by how many kinds of evidence matched, and finally
by code — never by the order entries happen to appear in the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from stamen.diagnostics.catalog import UNKNOWN_CODE, CatalogEntry, CompiledPattern, catalog, get_entry
from stamen.diagnostics.codes import EntryTier, ErrorCategory, RetryClass, Severity

# Failures surface at the end of a log; scanning only the tail bounds the cost on huge logs.
MAX_SCANNED_LINES = 20_000
LOG_TAIL_LINES = 20
MAX_EVIDENCE_LINES = 8
MAX_LINE_CHARS = 500

SLURM_STATE_WEIGHT = 60.0
PATTERN_BASE_WEIGHT = 20.0
PATTERN_SPECIFICITY_WEIGHT = 0.5
PATTERN_SPECIFICITY_CAP = 60
EXTRA_PATTERN_WEIGHT = 4.0
EXTRA_PATTERN_CAP = 3
SIGNAL_WEIGHT = 15.0
SPECIFIC_EXIT_WEIGHT = 15.0
GENERIC_EXIT_WEIGHT = 2.0
GENERIC_EXIT_CODES = frozenset({1, 2, 255})
# Family and wrapper matches weigh a fixed amount whatever their wording: a family just under the
# weakest cause match (PATTERN_BASE_WEIGHT plus specificity) and above a specific exit code, a
# wrapper below both, so a wrapper never hides the exit status it reports and a family never
# outranks a cause the log names. Further matched lines only break ties within a tier.
FAMILY_PATTERN_WEIGHT = 18.0
WRAPPER_PATTERN_WEIGHT = 10.0
TIER_EXTRA_WEIGHT = 1.0
TIER_EXTRA_CAP = 2
# A generic hint weighs just above the floor and below every other kind of evidence (a wrapper, a
# specific exit code), so it only ever replaces WS-UNK-000; between hints the most specific wins.
HINT_PATTERN_WEIGHT = 6.0
TOOL_HINT_WEIGHT = 7.0  # a tool's name says more about the category than a generic wording
HINT_FACT = "generic wording only: no catalog entry names this failure (low confidence)"
# Below this a candidate rests on nothing but a generic exit code, which identifies nothing.
MIN_CANDIDATE_SCORE = 5.0

# Exit statuses that workflow engines and wrappers report in the log.
_REPORTED_EXIT_STATUS = (
    re.compile(r"terminated with an error exit status \((\d{1,3})\)"),  # Nextflow
    re.compile(r"returned non-zero exit status (\d{1,3})"),  # Python CalledProcessError (Snakemake)
    re.compile(r"[Ee]xited with exit code (\d{1,3})"),  # srun
    re.compile(r"caused the workflow execution to fail was: (\d{1,3})"),  # Nextflow's completion summary
    re.compile(r"exited with return code (\d{1,3})"),  # Cromwell
    # Snakemake's cluster jobs and "Error submitting jobscript (exit code 1)"
    re.compile(r"\(exit code (\d{1,3})\)"),
    re.compile(r"\*\*\* \[[^\]]+\] Error (\d{1,3})"),  # GNU make (src/job.c)
    re.compile(r"unexpected exit status (\d{1,3}) was not ignored"),  # Google Life Sciences / Batch actions
)
_EXIT_STATUS_HEADING = re.compile(r"^\s*Command exit status:\s*$")  # Nextflow, value on the next line
_EXIT_STATUS_VALUE = re.compile(r"^\s*(\d{1,3})\s*$")
# Lines that are noise in any failure, though they print "No such file or directory": locale
# warnings, and clean-up commands removing files that were never written.
_NOISE_LINE = re.compile(
    r"warning: setlocale: |cannot change locale \(|^\s*rm: cannot remove .*: No such file or directory",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class EvidenceLine:
    line_number: int  # 1-based, counted over the whole text
    text: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Candidate:
    code: str
    name: str
    category: ErrorCategory
    severity: Severity
    retry_class: RetryClass
    score: float
    evidence_lines: tuple[EvidenceLine, ...] = ()
    # Non-log evidence, e.g. "exit code 137" or "job state OUT_OF_MEMORY".
    matched_facts: tuple[str, ...] = ()
    best_specificity: int = 0
    # Rests on generic hint wordings only: the catalog does not know the failure (low confidence).
    from_hints: bool = False


@dataclass(frozen=True, slots=True)
class Diagnosis:
    candidates: tuple[Candidate, ...]
    log_tail: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("a Diagnosis always carries at least one candidate")

    @property
    def top(self) -> Candidate:
        return self.candidates[0]

    @property
    def is_unknown(self) -> bool:
        return self.top.code == UNKNOWN_CODE


@dataclass(slots=True)
class _EntryMatch:
    evidence: list[EvidenceLine] = field(default_factory=list)
    matched_patterns: dict[str, int] = field(default_factory=dict)  # source -> specificity
    matched_lines: dict[str, set[int]] = field(default_factory=dict)  # source -> line indexes
    kind_only: set[str] = field(default_factory=set)  # matched sources that name only the kind
    hints: set[str] = field(default_factory=set)  # matched generic hint sources
    tool_hints: set[str] = field(default_factory=set)  # of which naming a tool or service

    def corroborating_patterns(self, patterns: dict[str, int]) -> int:
        """Further patterns that matched lines the more specific ones did not: two wordings of one
        message (curl's "(6)" and its "Could not resolve host") are one piece of evidence."""
        covered: set[int] = set()
        counted = 0
        for source in sorted(patterns, key=lambda s: (-patterns[s], s)):
            lines = self.matched_lines[source]
            if not lines <= covered:
                counted += 1
                covered |= lines
        return max(counted - 1, 0)


def classify_error(
    text: str,
    exit_code: int | None = None,
    signal: int | None = None,
    slurm_state: str | None = None,
    *,
    entries: Sequence[CatalogEntry] | None = None,
) -> Diagnosis:
    """Rank catalog entries that explain a failure; unknown failures give a WS-UNK-000 candidate.

    ``exit_code`` may be negative, as Python's subprocess reports death by signal; it is then
    read as that signal.  ``slurm_state`` is the job state the scheduler reported (workset.failed's
    ``native_state``): a Slurm state, or one of stamen's own (``MAX_DURATION``, ``LOST``).
    ``entries`` replaces the packaged catalog (used by tests).
    """
    if exit_code is not None and exit_code < 0 and signal is None:
        signal, exit_code = -exit_code, None
    state = normalise_slurm_state(slurm_state)
    all_lines = text.splitlines()
    offset = max(0, len(all_lines) - MAX_SCANNED_LINES)
    scanned = ["" if _NOISE_LINE.search(line) else line for line in all_lines[offset:]]
    reported = False
    if exit_code is None and signal is None:
        exit_code = reported_exit_status(scanned)
        reported = exit_code is not None
    numbered_tail = _numbered_tail(all_lines)
    log_tail = tuple(line for _, line in numbered_tail)

    log = _ScannedLog(scanned, offset)
    pool = entries if entries is not None else catalog()
    active = _PatternIndex.of(pool).active(log.lowered_text)
    candidates: list[Candidate] = []
    for position, entry in enumerate(pool):
        if entry.code == UNKNOWN_CODE:
            continue
        candidate = _score_entry(entry, active.get(position, ()), log, exit_code, signal, state, reported)
        if candidate is not None and candidate.score >= MIN_CANDIDATE_SCORE:
            candidates.append(candidate)

    if any(not candidate.from_hints for candidate in candidates):
        candidates = [candidate for candidate in candidates if not candidate.from_hints]
    candidates.sort(key=_ranking_key)
    if not candidates:
        candidates.append(_unknown_candidate(numbered_tail, entries))
    return Diagnosis(candidates=tuple(candidates), log_tail=log_tail)


def index_catalog() -> None:
    """Load, validate and index the packaged catalog now (both are kept for the process's life). A
    service that classifies calls it at start-up: a broken catalog stops it there, and its first
    failure does not pay the ~0.1 s of CPU."""
    _PatternIndex.of(catalog())


def reported_exit_status(lines: Sequence[str]) -> int | None:
    """The last exit status a wrapper reports in the log, e.g. Nextflow's "exit status (137)"."""
    found: int | None = None
    expect_value = False
    for line in lines:
        if expect_value and line.strip():
            value = _EXIT_STATUS_VALUE.match(line)
            if value is not None:
                found = int(value.group(1))
            expect_value = False
        if _EXIT_STATUS_HEADING.match(line):
            expect_value = True
            continue
        for pattern in _REPORTED_EXIT_STATUS:
            for match in pattern.finditer(line):
                found = int(match.group(1))
    return found if found is not None and 0 < found < 256 else None


def normalise_slurm_state(state: str | None) -> str | None:
    """``"CANCELLED by 1234"`` -> ``"CANCELLED"``; sacct appends detail after the state word."""
    if state is None or not state.strip():
        return None
    return state.strip().split()[0].rstrip("+").upper()


def _ranking_key(candidate: Candidate) -> tuple[float, int, int, str]:
    kinds = (1 if candidate.evidence_lines else 0) + len(candidate.matched_facts)
    return (-candidate.score, -candidate.best_specificity, -kinds, candidate.code)


class _ScannedLog:
    """The scanned lines with their lower-cased forms, for the patterns' literal pre-test."""

    __slots__ = ("lines", "lowered", "lowered_text", "offset")

    def __init__(self, lines: Sequence[str], offset: int) -> None:
        self.lines = lines
        self.offset = offset
        self.lowered = [line.lower() for line in lines]
        self.lowered_text = "\n".join(self.lowered)


class _PatternIndex:
    """Which patterns of a catalog could match a text, from their required literals: most patterns'
    text is nowhere in a given log, and one substring test per distinct literal rules them out."""

    _cache: dict[int, tuple[Sequence[CatalogEntry], _PatternIndex]] = {}

    def __init__(self, entries: Sequence[CatalogEntry]) -> None:
        self.by_literal: dict[str, list[tuple[int, int]]] = {}
        self.always: list[tuple[int, int]] = []
        for position, entry in enumerate(entries):
            for number, pattern in enumerate(entry.match.compiled_patterns):
                if pattern.literals is None:
                    self.always.append((position, number))
                for literal in pattern.literals or ():
                    self.by_literal.setdefault(literal, []).append((position, number))
        self.entries = entries

    @classmethod
    def of(cls, entries: Sequence[CatalogEntry]) -> _PatternIndex:
        cached = cls._cache.get(id(entries))
        if cached is not None and cached[0] is entries:
            return cached[1]
        index = cls(entries)
        if entries is catalog():  # only the packaged catalog lives long enough to be worth keeping
            cls._cache[id(entries)] = (entries, index)
        return index

    def active(self, lowered_text: str) -> dict[int, tuple[CompiledPattern, ...]]:
        """Entry position -> its patterns (in catalog order) whose required text occurs."""
        hits = set(self.always)
        for literal, places in self.by_literal.items():
            if literal in lowered_text:
                hits.update(places)
        numbers: dict[int, list[int]] = {}
        for position, number in hits:
            numbers.setdefault(position, []).append(number)
        return {
            position: tuple(self.entries[position].match.compiled_patterns[n] for n in sorted(found))
            for position, found in numbers.items()
        }


def _score_entry(
    entry: CatalogEntry,
    active: Sequence[CompiledPattern],
    log: _ScannedLog,
    exit_code: int | None,
    signal: int | None,
    slurm_state: str | None,
    exit_code_reported: bool = False,
) -> Candidate | None:
    rules = entry.match
    found = _EntryMatch()
    for index, line in enumerate(log.lines if active else ()):
        lowered = log.lowered[index]
        for pattern in active:
            if pattern.may_match(lowered) and pattern.regex.search(line):
                found.matched_patterns.setdefault(pattern.source, pattern.specificity)
                if pattern.kind_only:
                    found.kind_only.add(pattern.source)
                if pattern.hint:
                    found.hints.add(pattern.source)
                if pattern.tool_hint:
                    found.tool_hints.add(pattern.source)
                found.matched_lines.setdefault(pattern.source, set()).add(index)
                number = log.offset + index + 1
                if len(found.evidence) < MAX_EVIDENCE_LINES and (
                    not found.evidence or found.evidence[-1].line_number != number
                ):
                    found.evidence.append(EvidenceLine(number, line.strip()[:MAX_LINE_CHARS], pattern.source))

    score = 0.0
    facts: list[str] = []
    strong = {source: spec for source, spec in found.matched_patterns.items() if source not in found.hints}
    best_specificity = max(strong.values(), default=0)
    if strong:
        tier = entry.tier
        naming = [spec for source, spec in strong.items() if source not in found.kind_only]
        if tier is EntryTier.CAUSE and not naming:
            # Only wordings every cause of this kind prints: they weigh as a family, and a family entry
            # (a tool's own vocabulary) wins the tie, however long the errno text.
            tier = EntryTier.FAMILY
            best_specificity = 0
        score += _pattern_score(
            tier, max(naming, default=best_specificity), found.corroborating_patterns(strong)
        )
    elif found.hints:
        hinted = {source: found.matched_patterns[source] for source in found.hints}
        best_specificity = max(hinted.values())
        score += (TOOL_HINT_WEIGHT if found.tool_hints else HINT_PATTERN_WEIGHT) + TIER_EXTRA_WEIGHT * min(
            found.corroborating_patterns(hinted), TIER_EXTRA_CAP
        )
        facts.append(HINT_FACT)
    if slurm_state is not None and slurm_state in rules.slurm_states:
        score += SLURM_STATE_WEIGHT
        facts.append(f"job state {slurm_state}")
    if signal is not None and signal in rules.signals:
        score += SIGNAL_WEIGHT
        facts.append(f"signal {signal}")
    if exit_code is not None and exit_code in rules.exit_codes:
        score += GENERIC_EXIT_WEIGHT if exit_code in GENERIC_EXIT_CODES else SPECIFIC_EXIT_WEIGHT
        facts.append(f"exit code {exit_code}" + (" (reported in the log)" if exit_code_reported else ""))
    if score == 0.0:
        return None
    return Candidate(
        code=entry.code,
        name=entry.name,
        category=entry.category,
        severity=entry.severity,
        retry_class=entry.retry_class,
        score=round(score, 3),
        evidence_lines=tuple(found.evidence),
        matched_facts=tuple(facts),
        best_specificity=best_specificity,
        from_hints=facts == [HINT_FACT],
    )


def _pattern_score(tier: EntryTier, best_specificity: int, corroborating: int) -> float:
    if tier is not EntryTier.CAUSE:
        weight = FAMILY_PATTERN_WEIGHT if tier is EntryTier.FAMILY else WRAPPER_PATTERN_WEIGHT
        return weight + TIER_EXTRA_WEIGHT * min(corroborating, TIER_EXTRA_CAP)
    score = PATTERN_BASE_WEIGHT + PATTERN_SPECIFICITY_WEIGHT * min(best_specificity, PATTERN_SPECIFICITY_CAP)
    return score + EXTRA_PATTERN_WEIGHT * min(corroborating, EXTRA_PATTERN_CAP)


def _numbered_tail(lines: Sequence[str]) -> list[tuple[int, str]]:
    """The last non-blank lines with their 1-based line numbers."""
    tail: list[tuple[int, str]] = []
    for index in range(len(lines) - 1, -1, -1):
        if len(tail) == LOG_TAIL_LINES:
            break
        if lines[index].strip():
            tail.append((index + 1, lines[index].rstrip()[:MAX_LINE_CHARS]))
    tail.reverse()
    return tail


def _unknown_candidate(tail: Sequence[tuple[int, str]], entries: Sequence[CatalogEntry] | None) -> Candidate:
    pool = {entry.code: entry for entry in entries} if entries is not None else {}
    unknown = pool.get(UNKNOWN_CODE) or get_entry(UNKNOWN_CODE)
    return Candidate(
        code=unknown.code,
        name=unknown.name,
        category=unknown.category,
        severity=unknown.severity,
        retry_class=unknown.retry_class,
        score=0.0,
        evidence_lines=tuple(EvidenceLine(number, line, "") for number, line in tail),
    )
