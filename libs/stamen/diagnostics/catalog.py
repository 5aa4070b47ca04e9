"""The error catalog: packaged YAML data validated into immutable pydantic models.

Regexes are compiled once, when the catalog is first loaded, and cached with it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Annotated, Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from stamen.diagnostics.codes import EntryTier, ErrorCategory, RetryClass, Severity
from stamen.diagnostics.specificity import literal_specificity, required_literals

CATALOG_RESOURCE = "catalog.yaml"
# libyaml's safe loader reads the catalog ~10x faster than pure Python (0.01 s instead of 0.1 s, once
# per process); the same documents either way.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
UNKNOWN_CODE = "WS-UNK-000"
_CODE_SHAPE = re.compile(r"^WS-(?P<prefix>[A-Z]{3})-(?P<number>\d{3})$")
# Log messages differ in capitalisation across tool versions, so every rule ignores case.
PATTERN_FLAGS = re.IGNORECASE


class UnknownErrorCodeError(KeyError):
    """Raised when a code is not in the catalog; the message names the code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"unknown error code {self.code!r}: not in the stamen error catalog"


class CatalogError(ValueError):
    """The packaged catalog data is inconsistent (duplicate codes, missing WS-UNK-000, ...)."""


# The validator checks each pattern and model_post_init keeps it compiled: both ask these, so a pattern is
# compiled and measured once (re's own cache holds 512 patterns; the catalog has over a thousand).
@cache
def _compiled(source: str) -> re.Pattern[str]:
    return re.compile(source, PATTERN_FLAGS)


@cache
def _specificity(source: str) -> int:
    return literal_specificity(source)


class CompiledPattern(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    regex: re.Pattern[str]
    specificity: int
    # Lower-cased strings one of which any match contains (None: unknown); a line or text that has
    # none of them is not searched with the regex.
    literals: tuple[str, ...] | None = None
    # From ``family_patterns``: the wording names only the kind of failure, not its cause.
    kind_only: bool = False
    # From ``hint_patterns`` or ``tool_hint_patterns``: only leans towards the entry (see MatchRules).
    hint: bool = False
    # From ``tool_hint_patterns``: names a tool or service, which says more than a generic wording.
    tool_hint: bool = False

    def may_match(self, lowered: str) -> bool:
        return self.literals is None or any(literal in lowered for literal in self.literals)


class MatchRules(BaseModel):
    """Evidence that identifies a failure; any one kind of evidence can match on its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: tuple[str, ...] = ()
    # Wordings that name only the kind of failure (an errno text such as "No such file or
    # directory", "failed to pull image"): every tool prints them, whatever the cause, so on their
    # own they weigh as a family match and a message that says why outranks them.
    family_patterns: tuple[str, ...] = ()
    # Generic wordings with no tool vocabulary behind them ("failed to open", "unknown option",
    # "only 3 usable sites"): they count only when nothing else in the catalog matched, so a log
    # every entry misses gets its most likely category instead of WS-UNK-000, with low confidence.
    hint_patterns: tuple[str, ...] = ()
    # A tool's or service's name (botocore, slurmctld, wget, conda): the category of its domain, as a
    # hint that outranks generic wordings (most of what such a tool reports is of that category).
    tool_hint_patterns: tuple[str, ...] = ()
    exit_codes: tuple[int, ...] = ()
    signals: tuple[Annotated[int, Field(ge=1, le=64)], ...] = ()
    slurm_states: tuple[str, ...] = ()

    _compiled: tuple[CompiledPattern, ...] = PrivateAttr(default=())

    @field_validator("patterns", "family_patterns", "hint_patterns", "tool_hint_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for source in patterns:
            try:
                _compiled(source)
            except re.error as error:
                raise ValueError(f"pattern {source!r} is not a valid regex: {error}") from error
            if _specificity(source) == 0:
                raise ValueError(f"pattern {source!r} contains no literal text and would match anything")
        return patterns

    @field_validator("slurm_states")
    @classmethod
    def _states_upper_case(cls, states: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(state.strip().upper() for state in states)

    def model_post_init(self, context: Any, /) -> None:
        self._compiled = tuple(
            CompiledPattern(
                source=source,
                regex=_compiled(source),
                specificity=_specificity(source),
                literals=required_literals(source),
                kind_only=kind_only,
                hint=hint or tool_hint,
                tool_hint=tool_hint,
            )
            for sources, kind_only, hint, tool_hint in (
                (self.patterns, False, False, False),
                (self.family_patterns, True, False, False),
                (self.hint_patterns, False, True, False),
                (self.tool_hint_patterns, False, False, True),
            )
            for source in sources
        )

    @property
    def compiled_patterns(self) -> tuple[CompiledPattern, ...]:
        return self._compiled

    @property
    def is_empty(self) -> bool:
        return not (
            self.patterns
            or self.family_patterns
            or self.hint_patterns
            or self.tool_hint_patterns
            or self.exit_codes
            or self.signals
            or self.slurm_states
        )


class CatalogEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    name: str = Field(min_length=3)
    summary: str = Field(min_length=10)
    category: ErrorCategory
    severity: Severity
    retry_class: RetryClass
    # How the entry ranks against others matched by the same log (see EntryTier).
    tier: EntryTier = EntryTier.CAUSE
    match: MatchRules = MatchRules()
    remediation: tuple[str, ...] = Field(min_length=1)
    docs_anchor: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")

    @model_validator(mode="after")
    def _code_agrees_with_category(self) -> Self:
        shape = _CODE_SHAPE.match(self.code)
        if shape is None:
            raise ValueError(f"code {self.code!r} must look like WS-XXX-nnn")
        if shape["prefix"] != self.category.code_prefix:
            raise ValueError(
                f"code {self.code!r} has prefix {shape['prefix']!r} but category "
                f"{self.category.value!r} uses {self.category.code_prefix!r}"
            )
        if self.category is not ErrorCategory.UNKNOWN and self.match.is_empty:
            raise ValueError(f"{self.code}: a catalog entry needs at least one match rule")
        if self.match.family_patterns and self.tier is not EntryTier.CAUSE:
            raise ValueError(
                f"{self.code}: family_patterns belong to cause entries (all of a {self.tier.value}'s weigh so)"
            )
        return self


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: tuple[CatalogEntry, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for attribute in ("code", "name", "docs_anchor"):
            seen: set[str] = set()
            for entry in self.entries:
                value = getattr(entry, attribute)
                if value in seen:
                    raise ValueError(f"duplicate {attribute} {value!r} in error catalog")
                seen.add(value)
        if UNKNOWN_CODE not in {entry.code for entry in self.entries}:
            raise ValueError(f"the catalog must define {UNKNOWN_CODE}")
        return self


def parse_catalog(document: str) -> tuple[CatalogEntry, ...]:
    """Validate catalog YAML text; raises pydantic.ValidationError on bad data."""
    raw = yaml.load(document, Loader=_YAML_LOADER)  # a safe loader (libyaml's when built)
    return Catalog.model_validate(raw).entries


@cache
def catalog() -> tuple[CatalogEntry, ...]:
    """The validated packaged catalog, sorted by code; loaded and compiled once per process."""
    text = resources.files("stamen.diagnostics").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return tuple(sorted(parse_catalog(text), key=lambda entry: entry.code))


@cache
def _entries_by_code() -> dict[str, CatalogEntry]:
    return {entry.code: entry for entry in catalog()}


def get_entry(code: str) -> CatalogEntry:
    try:
        return _entries_by_code()[code]
    except KeyError:
        raise UnknownErrorCodeError(code) from None


def get_remediation_for_error(code: str) -> list[str]:
    """Remediation steps for ``code``; raises UnknownErrorCodeError for codes not in the catalog."""
    return list(get_entry(code).remediation)


def is_retryable(code: str) -> bool:
    """Whether failures with ``code`` are worth an automatic retry (transient or resource class)."""
    return get_entry(code).retry_class.is_retryable
