"""Cost estimate for a workset (pure): bases in -> vCPU-hours, duration, storage and dollars out.

The model, its formulas and its caveats are written out in docs/cost-model.md; the numbers it
multiplies live in profiles.yaml (per pipeline) and prices.yaml (per region).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from stamen.worksets.registry import RegionPrices, prices, resource_profiles
from stamen.worksets.sniff import SniffResult
from stamen.worksets.spec import WorksetSpec, input_files

GB = 1e9  # decimal gigabytes and gigabases, as AWS bills storage and transfer
HOURS_PER_MONTH = 730
_REGION_IN_NAME = re.compile(r"(?:^|[.-])((?:us|eu|ap|ca|sa|me|af)-[a-z]+-\d)(?:$|[.-])")


class CostEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    pipeline: str
    region: str
    gbases: float
    input_gb: float
    vcpu_hours: float
    duration_minutes: float
    storage_gb: float
    peak_memory_gib: float
    transfer_gb: float
    transfer_usd: float
    storage_usd: float
    cost_usd_low: float
    cost_usd_median: float
    cost_usd_high: float
    unsized_inputs: list[str]
    caveats: list[str]


def bucket_region_from_name(bucket: str) -> str | None:
    """Region embedded in a bucket name (Daylily names buckets like `...-omics-analysis-us-west-2`)."""
    match = _REGION_IN_NAME.search(bucket)
    return match.group(1) if match else None


def _bases(uri: str, fmt: str, size: int, sniff: SniffResult | None) -> float:
    defaults = resource_profiles().input_defaults
    if fmt == "cram":
        return size / defaults.cram_bytes_per_base
    if fmt == "bam":
        return size / defaults.bam_bytes_per_base
    if sniff is not None and sniff.format == "fastq":
        ratio = (sniff.compression_ratio or defaults.fastq_gzip_compression_ratio) if sniff.gzip else 1.0
        per_base = sniff.text_bytes_per_base or defaults.fastq_text_bytes_per_base
    else:
        ratio = defaults.fastq_gzip_compression_ratio if uri.lower().endswith(".gz") else 1.0
        per_base = defaults.fastq_text_bytes_per_base
    return size * ratio / per_base


def estimate(
    spec: WorksetSpec,
    *,
    object_sizes: Mapping[str, int],
    sniffs: Mapping[str, SniffResult] | None = None,
    cluster_region: str | None = None,
    bucket_regions: Mapping[str, str] | None = None,
) -> CostEstimate:
    """Estimate cost and duration of running `spec` on a cluster in `cluster_region`.

    `object_sizes` maps input URI -> bytes; `sniffs` maps input URI -> what sniffing its first block
    learned; `bucket_regions` maps bucket -> region (else the region is read from the bucket name, else
    assumed to be the cluster's)."""
    table = prices()
    profiles = resource_profiles()
    caveats: list[str] = [f"prices as of {table.as_of}; spot prices vary by hour and instance family"]
    region = cluster_region or table.default_region
    if region not in table.regions:
        caveats.append(f"no prices for region {region!r}; {table.default_region} prices used")
    region_prices: RegionPrices = table.regions.get(region, table.regions[table.default_region])
    profile = profiles.pipelines[spec.pipeline]
    sniffs = sniffs or {}

    # Compute is per sample unit: Daylily processes a file once for every unit that lists it.
    total_bases = 0.0
    unsized: list[str] = []
    for _path, uri, fmt in input_files(spec):
        size = object_sizes.get(uri)
        if size is None:
            unsized.append(uri)
            continue
        total_bases += _bases(uri, fmt, size, sniffs.get(uri))
    if unsized:
        caveats.append(f"{len(unsized)} input(s) without a known size are not counted")
    if any(fmt != "fastq" for _, _, fmt in input_files(spec)):
        caveats.append("bases in CRAM/BAM inputs are estimated from typical bytes per base")

    # Storage and transfer are per distinct object: each is staged once.
    distinct = {
        uri: size
        for uri in dict.fromkeys(u for _, u, _ in input_files(spec))
        if (size := object_sizes.get(uri)) is not None
    }
    input_gb = sum(distinct.values()) / GB
    transfer_gb = transfer_usd = 0.0
    for uri, size in distinct.items():
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        source = (bucket_regions or {}).get(bucket) or bucket_region_from_name(bucket)
        if source is None:
            caveats.append(f"region of bucket {bucket} unknown; assumed {region}")
            continue
        if source != region:
            source_prices = table.regions.get(source, region_prices)
            transfer_gb += size / GB
            transfer_usd += size / GB * source_prices.transfer_cross_region_per_gb

    gbases = total_bases / GB
    vcpu_hours = profile.fixed_vcpu_hours + gbases * profile.vcpu_hours_per_gbase
    duration_minutes = profile.fixed_minutes + vcpu_hours / profile.parallel_vcpus * 60
    storage_gb = input_gb * profile.storage_multiplier
    storage_usd = storage_gb * region_prices.storage_gb_month * (duration_minutes / 60) / HOURS_PER_MONTH
    compute_median = vcpu_hours * region_prices.vcpu_hour_spot
    compute_low = compute_median * profiles.band.low_factor
    compute_high = vcpu_hours * region_prices.vcpu_hour_on_demand * profiles.band.high_factor
    fixed = storage_usd + transfer_usd
    return CostEstimate(
        pipeline=spec.pipeline,
        region=region,
        gbases=gbases,
        input_gb=input_gb,
        vcpu_hours=vcpu_hours,
        duration_minutes=duration_minutes,
        storage_gb=storage_gb,
        peak_memory_gib=profile.peak_memory_gib,
        transfer_gb=transfer_gb,
        transfer_usd=transfer_usd,
        storage_usd=storage_usd,
        cost_usd_low=compute_low + fixed,
        cost_usd_median=compute_median + fixed,
        cost_usd_high=compute_high + fixed,
        unsized_inputs=unsized,
        caveats=list(dict.fromkeys(caveats)),
    )


class MeteredStep(BaseModel):
    """One finished step as the executors measured it, with where it ran."""

    model_config = ConfigDict(frozen=True)

    cpu_seconds: float | None
    region: str | None = None
    price_factor: float | None = None


class MeteredCost(BaseModel):
    """What measured CPU time costs at list spot prices: the figure set beside the estimate."""

    model_config = ConfigDict(frozen=True)

    cost_usd: float
    cpu_seconds: float
    steps_measured: int
    steps_unmeasured: int
    unknown_regions: tuple[str, ...]
    prices_as_of: str


def metered_cost(steps: list[MeteredStep]) -> MeteredCost:
    """Measured vCPU-hours x the region's spot vCPU-hour price x the cluster's price factor, summed.
    Steps without a CPU measurement are counted, not guessed; unknown regions use the default region."""
    table = prices()
    cost = cpu = 0.0
    measured = unmeasured = 0
    unknown: set[str] = set()
    for step in steps:
        if step.cpu_seconds is None:
            unmeasured += 1
            continue
        measured += 1
        cpu += step.cpu_seconds
        region = step.region or table.default_region
        if region not in table.regions:
            unknown.add(region)
        rate = table.regions.get(region, table.regions[table.default_region]).vcpu_hour_spot
        cost += step.cpu_seconds / 3600 * rate * (step.price_factor or 1.0)
    return MeteredCost(
        cost_usd=cost,
        cpu_seconds=cpu,
        steps_measured=measured,
        steps_unmeasured=unmeasured,
        unknown_regions=tuple(sorted(unknown)),
        prices_as_of=str(table.as_of),
    )
