"""Usage per tenant per month (pure summary + thin adapters), its CSV export, and the storage quota check.

- worksets by state: worksets created in the month, by their current state;
- vCPU-hours: CPU seconds the executors measured (step_runs.resources.cpu_seconds) of steps that ended in
  the month, / 3600;
- storage GB: bytes in the tenant's bucket, measured now (list_objects_v2; current versions only; a bucket
  that does not exist holds 0, see bucket_usage.py). Past months have no storage figure: nothing records
  it historically yet;
- estimated cost: the sum of the validator's median estimates (workset_validations.estimate, the one
  `workset.validated` carries) of the month's worksets; worksets without one are counted, not guessed;
- actual cost: measured vCPU-hours x the cluster region's spot vCPU-hour list price x the cluster's price
  factor (prices.yaml). It is a metered figure, not the AWS bill, and excludes storage and transfer.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from stamen.customers.bucket_usage import SHARED_BUCKET_USAGE, BucketUsageCache, measure_bucket
from stamen.customers.model import Customer, CustomerError, CustomerNotFound
from stamen.customers.repository import CustomerRepository, EstimateRow, StepUsageRow, UsageRepository
from stamen.worksets.cost import MeteredStep, metered_cost
from stamen.worksets.registry import prices

GB = 1e9  # decimal gigabytes, as AWS bills storage (and as the cost estimate uses)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class InvalidMonth(CustomerError):
    code = "USAGE_MONTH_INVALID"


class StorageQuotaExceeded(CustomerError):
    code = "STORAGE_QUOTA_EXCEEDED"
    http_status = 409


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        match = _MONTH.fullmatch(text.strip())
        if not match or not (1 <= int(match.group(2)) <= 12) or int(match.group(1)) < 1970:
            raise InvalidMonth(f"month {text!r} is not YYYY-MM", month=text)
        month = cls(int(match.group(1)), int(match.group(2)))
        if month.year > 9998:  # its end (the next month's first day) must be a date too: 9999-12 has none
            raise InvalidMonth(
                f"month {text!r} is not a month stamen reports on (1970-01 to 9998-12)", month=text
            )
        return month

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime(self.year + self.month // 12, self.month % 12 + 1, 1, tzinfo=UTC)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class UsageReport:
    customer_id: str
    month: str
    worksets_by_state: dict[str, int]
    worksets_total: int
    vcpu_hours: float
    steps_measured: int
    steps_unmeasured: int
    storage_gb: float | None
    storage_measured_at: datetime | None
    max_storage_gb: float
    estimated_cost_usd: float
    worksets_with_estimate: int
    worksets_without_estimate: int
    actual_cost_usd: float
    caveats: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "month": self.month,
            "worksets_by_state": dict(self.worksets_by_state),
            "worksets_total": self.worksets_total,
            "vcpu_hours": self.vcpu_hours,
            "steps_measured": self.steps_measured,
            "steps_unmeasured": self.steps_unmeasured,
            "storage_gb": self.storage_gb,
            "storage_measured_at": self.storage_measured_at.isoformat() if self.storage_measured_at else None,
            "max_storage_gb": self.max_storage_gb,
            "estimated_cost_usd": self.estimated_cost_usd,
            "worksets_with_estimate": self.worksets_with_estimate,
            "worksets_without_estimate": self.worksets_without_estimate,
            "actual_cost_usd": self.actual_cost_usd,
            "caveats": list(self.caveats),
        }


def summarise(
    *,
    customer_id: str,
    month: Month,
    worksets_by_state: dict[str, int],
    steps: Sequence[StepUsageRow],
    estimates: Sequence[EstimateRow],
    storage_bytes: int | None,
    storage_measured_at: datetime | None,
    max_storage_gb: float,
) -> UsageReport:
    table = prices()
    metered = metered_cost(
        [MeteredStep(cpu_seconds=s.cpu_seconds, region=s.region, price_factor=s.price_factor) for s in steps]
    )
    caveats: list[str] = [
        f"actual cost = measured CPU time x list spot price (prices as of {metered.prices_as_of}); "
        "not the AWS bill; storage and transfer not included"
    ]
    cpu_seconds, cost = metered.cpu_seconds, metered.cost_usd
    measured, unmeasured = metered.steps_measured, metered.steps_unmeasured
    if unmeasured:
        caveats.append(f"{unmeasured} finished step(s) have no CPU measurement and are not counted")
    if metered.unknown_regions:
        caveats.append(
            f"no prices for {', '.join(metered.unknown_regions)}; {table.default_region} prices used"
        )
    with_estimate = [e for e in estimates if e.cost_usd_median is not None]
    without = len(estimates) - len(with_estimate)
    if without:
        caveats.append(
            f"{without} workset(s) have no stored cost estimate (not validated yet, or validated "
            "without one); the estimated cost leaves them out"
        )
    if storage_bytes is None:
        caveats.append("storage is measured from the bucket for the current month only")
    return UsageReport(
        customer_id=customer_id,
        month=str(month),
        worksets_by_state=dict(sorted(worksets_by_state.items())),
        worksets_total=sum(worksets_by_state.values()),
        vcpu_hours=round(cpu_seconds / 3600, 6),
        steps_measured=measured,
        steps_unmeasured=unmeasured,
        storage_gb=None if storage_bytes is None else storage_bytes / GB,
        storage_measured_at=storage_measured_at,
        max_storage_gb=max_storage_gb,
        estimated_cost_usd=round(sum(e.cost_usd_median or 0.0 for e in with_estimate), 6),
        worksets_with_estimate=len(with_estimate),
        worksets_without_estimate=without,
        actual_cost_usd=round(cost, 6),
        caveats=tuple(caveats),
    )


CSV_COLUMNS = (
    "customer_id",
    "month",
    "worksets_total",
    "worksets_by_state",
    "vcpu_hours",
    "steps_measured",
    "steps_unmeasured",
    "storage_gb",
    "max_storage_gb",
    "estimated_cost_usd",
    "worksets_with_estimate",
    "worksets_without_estimate",
    "actual_cost_usd",
    "caveats",
)


def to_csv(reports: Iterable[UsageReport]) -> str:
    """One row per (customer, month); worksets_by_state as `state=n;state=n`, caveats joined by ` | `."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in reports:
        writer.writerow(
            [
                r.customer_id,
                r.month,
                r.worksets_total,
                ";".join(f"{k}={v}" for k, v in r.worksets_by_state.items()),
                f"{r.vcpu_hours:.6f}",
                r.steps_measured,
                r.steps_unmeasured,
                "" if r.storage_gb is None else f"{r.storage_gb:.6f}",
                f"{r.max_storage_gb:g}",
                f"{r.estimated_cost_usd:.6f}",
                r.worksets_with_estimate,
                r.worksets_without_estimate,
                f"{r.actual_cost_usd:.6f}",
                " | ".join(r.caveats),
            ]
        )
    return out.getvalue()


def check_storage_quota(
    *, used_bytes: int, max_storage_gb: float, incoming_bytes: int = 0, bucket: str | None = None
) -> None:
    """Refuse (STORAGE_QUOTA_EXCEEDED) when the bucket plus what a submission adds exceeds the quota."""
    limit = max_storage_gb * GB
    if used_bytes + incoming_bytes > limit:
        raise StorageQuotaExceeded(
            f"storage quota exceeded: {used_bytes / GB:.3f} GB used + {incoming_bytes / GB:.3f} GB new "
            f"> {max_storage_gb:g} GB allowed",
            used_bytes=used_bytes,
            incoming_bytes=incoming_bytes,
            max_storage_gb=max_storage_gb,
            bucket=bucket,
        )


async def monthly_usage(
    pool: asyncpg.Pool, s3: Any, customer_id: str, month: Month, *, now: datetime | None = None
) -> UsageReport:
    """The report of one customer and month; storage is measured (from `s3`) only for the current month."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        customer = await CustomerRepository(conn).get(customer_id)
        if customer is None:
            raise CustomerNotFound(f"customer {customer_id} does not exist", customer_id=customer_id)
        usage = UsageRepository(conn)
        by_state = await usage.worksets_by_state(customer_id, month.start, month.end)
        steps = await usage.finished_steps(customer_id, month.start, month.end)
        estimates = await usage.estimates(customer_id, month.start, month.end)
    storage: int | None = None
    measured_at: datetime | None = None
    if month == Month.of(now):
        storage = await measure_bucket(s3, customer.s3_bucket)  # a report is measured fresh, never cached
        measured_at = now
    return summarise(
        customer_id=customer_id,
        month=month,
        worksets_by_state=by_state,
        steps=steps,
        estimates=estimates,
        storage_bytes=storage,
        storage_measured_at=measured_at,
        max_storage_gb=customer.max_storage_gb,
    )


async def check_customer_storage(
    pool: asyncpg.Pool,
    s3: Any,
    customer_id: str,
    *,
    incoming_bytes: int = 0,
    cache: BucketUsageCache | None = None,
) -> int:
    """The submission-time check, for the portal and the validator alike: the customer's bucket usage (from
    `cache`, by default the process's: at most 60 s old) against its max_storage_gb. Returns bytes used.

    Raises CustomerNotFound (not a customer: no quota applies), StorageQuotaExceeded (details: used_bytes,
    max_storage_gb, bucket) or StorageNotMeasured (the bucket could not be listed). A bucket that does not
    exist holds 0 bytes."""
    return await check_storage_of(
        await _customer(pool, customer_id), s3, incoming_bytes=incoming_bytes, cache=cache
    )


async def check_storage_of(
    customer: Customer, s3: Any, *, incoming_bytes: int = 0, cache: BucketUsageCache | None = None
) -> int:
    """check_customer_storage for a customer the caller has read already (the validator reads it with the
    workset, in one transaction)."""
    used = await (cache or SHARED_BUCKET_USAGE).bytes_used(s3, customer.customer_id, customer.s3_bucket)
    check_storage_quota(
        used_bytes=used,
        max_storage_gb=customer.max_storage_gb,
        incoming_bytes=incoming_bytes,
        bucket=customer.s3_bucket,
    )
    return used


async def _customer(pool: asyncpg.Pool, customer_id: str) -> Customer:
    async with pool.acquire() as conn:
        return required_customer(await CustomerRepository(conn).get(customer_id), customer_id)


def required_customer(customer: Customer | None, customer_id: str) -> Customer:
    """The customer read for `customer_id`; CustomerNotFound (not a customer: no quota applies) when none."""
    if customer is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist", customer_id=customer_id)
    return customer
