"""The workset specification: one model for everything stamen needs to run a workset.

The model checks structure (types, allowed values, ranges) so that `model_json_schema()` documents
them; checks that need context or should be reported together (id formats, URIs, pairing, the
reference registry) are rule functions in `stamen.worksets.rules`, so that one submission gets every
problem back at once instead of the first one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stamen.worksets.registry import daylily_format, references

Pipeline = Literal["germline", "somatic", "rna-seq", "wgs", "wes", "fastq-qc"]
Priority = Literal["urgent", "normal", "low"]
Platform = Literal["ILMN", "ONT", "PACBIO", "UG", "ROCHE", "CG"]
NotificationEvent = Literal["submitted", "started", "complete", "error", "cancelled"]


def _not_a_boolean(value: object) -> object:
    # `true` is not 1 here: Python's bool is an int, so without this `max_retries: true` would read as 1.
    if isinstance(value, bool):
        raise PydanticCustomError(
            "VAL-TYPE-001", "{value} is a boolean; give a number", {"value": str(value).lower()}
        )
    return value


NotBoolean = BeforeValidator(_not_a_boolean)
# Limits shared with what a requeue may change (stamen.retry.requeue), so the two cannot drift apart.
MaxRetries = Annotated[int, Field(ge=0, le=10), NotBoolean]
MaxDurationSeconds = Annotated[int, Field(ge=1, le=30 * 86400), NotBoolean]

_PIPELINE_ALIASES = {"rnaseq": "rna-seq", "rna_seq": "rna-seq", "fastq_qc": "fastq-qc", "qc": "fastq-qc"}
_PRIORITY_ALIASES = {"high": "urgent"}


class _SpecModel(BaseModel):
    # extra="forbid": a misspelt field is reported instead of silently dropped; allow_inf_nan=False: inf and
    # NaN (YAML .inf, JSON 1e999) are findings, and could not be stored in PostgreSQL's JSON anyway.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


def _normalise_platform(value: object) -> object:
    if isinstance(value, str):
        return daylily_format().platform_for_vendor(value) or value
    return value


class AlignedReads(_SpecModel):
    """An aligned-read input (CRAM or BAM), e.g. Ultima or ONT CRAMs, PacBio BAMs."""

    uri: str
    format: Literal["cram", "bam"]
    platform: Platform | None = Field(default=None, description="Defaults to the sample's platform.")

    _platform = field_validator("platform", mode="before")(_normalise_platform)


class FastqPair(_SpecModel):
    """Additional FASTQs of a sample unit from another platform (hybrid runs)."""

    platform: Platform
    r1: str | None = None
    r2: str | None = None

    _platform = field_validator("platform", mode="before")(_normalise_platform)


class Sample(_SpecModel):
    """One sample unit: one library on one run/lane. Several units may share a biological sample_id."""

    id: str = Field(
        description="Unique within the workset; for Daylily manifests RUN_ID_SAMPLE_ID_EXPERIMENTID_LANE."
    )
    sample_id: str | None = Field(
        default=None, description="Biological sample id (Daylily SAMPLE_ID); defaults to id."
    )
    platform: Platform
    instrument: str | None = Field(default=None, description="Daylily SEQ_PLATFORM, e.g. NOVASEQX.")
    r1: str | None = None
    r2: str | None = None
    alignments: list[AlignedReads] = Field(default_factory=list)
    extra_fastq: list[FastqPair] = Field(default_factory=list)
    coverage: Annotated[float | None, NotBoolean] = Field(
        default=None, ge=0, le=10000, description="Expected mean coverage (x)."
    )
    run_id: str | None = None
    experiment_id: str | None = None
    lane: str | None = None
    manifest_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Other Daylily manifest columns (SAMPLE_TYPE, STAGE_DIRECTIVE, ...), kept for export.",
    )

    _platform = field_validator("platform", mode="before")(_normalise_platform)

    @model_validator(mode="after")
    def _alignment_platforms(self) -> Sample:
        # Filled in so a spec compares equal however it was written (form or Daylily manifest).
        for aligned in self.alignments:
            if aligned.platform is None:
                aligned.platform = self.platform
        return self

    @property
    def biological_id(self) -> str:
        return self.sample_id or self.id


def _default_events() -> list[NotificationEvent]:
    return ["complete", "error"]


class Notifications(_SpecModel):
    emails: list[str] = Field(default_factory=list)
    events: list[NotificationEvent] = Field(default_factory=_default_events)
    webhook_url: str | None = None


class DaylilySettings(_SpecModel):
    """Daylily run arguments and bookkeeping, kept so the workset can be exported back to Daylily."""

    day_clone_args: str | None = Field(
        default=None, description="`day-clone` arguments; {workdir_name} is substituted."
    )
    dy_r_args: str | None = Field(default=None, description="`dy-r` pipeline run arguments.")
    workdir_name: str | None = None
    notes: str | None = None
    workset_id: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str | None = None
    created_at: str | None = None
    submitted_at: str | None = None
    enable_qc: bool | None = None
    archive_results: bool | None = None


class WorksetSpec(_SpecModel):
    """Everything needed to run one workset."""

    name: str
    tenant: str
    pipeline: Pipeline = "germline"
    reference_genome: str = Field(
        default="hg38", description="A genome key or alias from stamen/worksets/references.yaml."
    )
    priority: Priority = "normal"
    max_retries: MaxRetries = 3
    max_duration_seconds: MaxDurationSeconds | None = Field(
        default=None,
        description="Stop the run (and fail it with a timeout) after this long; none by default.",
    )
    samples: list[Sample]
    export_uri: str | None = None
    preferred_cluster: str | None = None
    budget: str | None = Field(
        default=None, description="Daylily budget name (AWS Budgets), appended to day-clone."
    )
    max_cost_usd: Annotated[float | None, NotBoolean] = Field(
        default=None, gt=0, description="Warn when the median estimate exceeds this."
    )
    labels: dict[str, str] = Field(default_factory=dict)
    notifications: Notifications = Field(default_factory=Notifications)
    daylily: DaylilySettings = Field(default_factory=DaylilySettings)

    @model_validator(mode="after")
    def _daylily_workset_id(self) -> WorksetSpec:
        # Daylily needs a workset_id; when none was given it is the workset name.
        if self.daylily.workset_id is None:
            self.daylily.workset_id = self.name
        return self

    @field_validator("pipeline", mode="before")
    @classmethod
    def _pipeline_alias(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return _PIPELINE_ALIASES.get(lowered, lowered)
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_alias(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return _PRIORITY_ALIASES.get(lowered, lowered)
        return value

    @field_validator("reference_genome", mode="before")
    @classmethod
    def _reference_alias(cls, value: object) -> object:
        # Unknown names are kept as given: the registry rule reports them with a fix.
        if isinstance(value, str):
            return references().canonical(value) or value.strip()
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_pairs(cls, value: object) -> object:
        """Accept labels as a mapping or as a list of "key=value" strings."""
        if not isinstance(value, list):
            return value
        labels: dict[str, str] = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise PydanticCustomError(
                    "VAL-LABEL-001", "label {item} is not key=value", {"item": repr(item)[:80]}
                )
            key, _, val = item.partition("=")
            labels[key.strip()] = val.strip()
        return labels


def input_files(spec: WorksetSpec) -> list[tuple[str, str, str]]:
    """Every input of every sample as (field path, uri, format: fastq|cram|bam)."""
    inputs: list[tuple[str, str, str]] = []
    for i, sample in enumerate(spec.samples):
        for name, uri in (("r1", sample.r1), ("r2", sample.r2)):
            if uri:
                inputs.append((f"samples[{i}].{name}", uri, "fastq"))
        for j, pair in enumerate(sample.extra_fastq):
            for name, uri in (("r1", pair.r1), ("r2", pair.r2)):
                if uri:
                    inputs.append((f"samples[{i}].extra_fastq[{j}].{name}", uri, "fastq"))
        for j, aligned in enumerate(sample.alignments):
            inputs.append((f"samples[{i}].alignments[{j}].uri", aligned.uri, aligned.format))
    return inputs
