"""Data files shipped with the package (reference genomes, Daylily format knowledge, pipeline resource
profiles, prices), loaded once and validated so a bad edit to a data file fails loudly at import."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _DataModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceGenome(_DataModel):
    description: str
    daylily_name: str
    aliases: list[str]
    fasta: str
    index_files: list[str]


class ReferenceRegistry(_DataModel):
    genomes: dict[str, ReferenceGenome]

    def canonical(self, name: str) -> str | None:
        """Canonical key for a genome name or alias (case-insensitive), None if unknown."""
        wanted = name.strip().lower()
        for key, genome in self.genomes.items():
            if wanted == key.lower() or wanted in (alias.lower() for alias in genome.aliases):
                return key
        return None

    def expected_objects(self, genome: str, location: str) -> list[str]:
        """Object URIs that must exist under a reference location for `genome`."""
        prefix = location if location.endswith("/") else location + "/"
        return [prefix + name for name in self.genomes[genome].index_files]


class PlatformInfo(_DataModel):
    aliases: list[str]
    instruments: list[str]
    paired: bool
    fastq_prefix: str | None


class AlignmentColumn(_DataModel):
    platform: str
    format: Literal["cram", "bam"]


class DaylilyFormat(_DataModel):
    platforms: dict[str, PlatformInfo]
    alignment_columns: dict[str, AlignmentColumn]
    manifest_columns: list[str]
    work_keys: dict[str, list[str]]

    def platform_for_vendor(self, vendor: str) -> str | None:
        wanted = _squash(vendor)
        for key, info in self.platforms.items():
            if wanted == _squash(key) or wanted in (_squash(a) for a in info.aliases):
                return key
        return None

    def platform_for_instrument(self, instrument: str) -> str | None:
        wanted = _squash(instrument)
        for key, info in self.platforms.items():
            if wanted in (_squash(i) for i in info.instruments):
                return key
        return None

    def fastq_columns(self, prefix: str | None) -> tuple[str, str]:
        return (f"{prefix}_R1_FQ", f"{prefix}_R2_FQ") if prefix else ("R1_FQ", "R2_FQ")

    def alignment_column(self, platform: str, fmt: str) -> str | None:
        for column, info in self.alignment_columns.items():
            if info.platform == platform and info.format == fmt:
                return column
        return None


class PipelineProfile(_DataModel):
    vcpu_hours_per_gbase: float = Field(ge=0)
    fixed_vcpu_hours: float = Field(ge=0)
    fixed_minutes: float = Field(ge=0)
    parallel_vcpus: int = Field(gt=0)
    peak_memory_gib: float = Field(gt=0)
    storage_multiplier: float = Field(gt=0)


class InputDefaults(_DataModel):
    fastq_gzip_compression_ratio: float = Field(gt=0)
    fastq_text_bytes_per_base: float = Field(gt=0)
    cram_bytes_per_base: float = Field(gt=0)
    bam_bytes_per_base: float = Field(gt=0)


class EstimateBand(_DataModel):
    low_factor: float = Field(gt=0)
    high_factor: float = Field(gt=0)


class ResourceProfiles(_DataModel):
    pipelines: dict[str, PipelineProfile]
    input_defaults: InputDefaults
    band: EstimateBand


class RegionPrices(_DataModel):
    vcpu_hour_spot: float = Field(ge=0)
    vcpu_hour_on_demand: float = Field(ge=0)
    storage_gb_month: float = Field(ge=0)
    transfer_cross_region_per_gb: float = Field(ge=0)


class PriceTable(_DataModel):
    as_of: str
    default_region: str
    regions: dict[str, RegionPrices]


def _squash(text: str) -> str:
    return text.strip().upper().replace(" ", "").replace("-", "")


def _load(name: str) -> object:
    return yaml.safe_load(files("stamen.worksets").joinpath(name).read_text(encoding="utf-8"))


@cache
def references() -> ReferenceRegistry:
    return ReferenceRegistry.model_validate(_load("references.yaml"))


@cache
def daylily_format() -> DaylilyFormat:
    return DaylilyFormat.model_validate(_load("daylily.yaml"))


@cache
def resource_profiles() -> ResourceProfiles:
    return ResourceProfiles.model_validate(_load("profiles.yaml"))


@cache
def prices() -> PriceTable:
    return PriceTable.model_validate(_load("prices.yaml"))
