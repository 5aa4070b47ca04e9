"""Usage per month (real PostgreSQL rows written by the real repositories, storage measured in moto),
CSV export, and the storage quota check."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import asyncpg
import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stamen.customers import (
    AsyncCustomerManager,
    CustomerNotFound,
    Month,
    StorageQuotaExceeded,
    check_storage_quota,
    to_csv,
)
from stamen.customers.cloud import open_clients
from stamen.customers.repository import EstimateRow, StepUsageRow
from stamen.customers.usage import GB, InvalidMonth, check_customer_storage, monthly_usage, summarise
from stamen.executors.base import JobHandle, JobResources, JobState, JobStatus
from stamen.inputs.repository import IntakeRepository
from stamen.intake import submit_workset
from stamen.store.clusters import ClusterRecord, ClusterRepository
from stamen.store.step_runs import StepRunRepository
from stamen.worksets.registry import prices
from tests.customers.awskit import customer_settings, unique


def test_month_bounds_and_parsing() -> None:
    assert Month.parse("2025-12").start == datetime(2025, 12, 1, tzinfo=UTC)
    assert Month.parse("2025-12").end == datetime(2026, 1, 1, tzinfo=UTC)
    assert Month.parse("2025-01").end == datetime(2025, 2, 1, tzinfo=UTC)
    for bad in ("2025-13", "2025-1", "25-01", "2025-00", ""):
        with pytest.raises(InvalidMonth) as err:
            Month.parse(bad)
        assert err.value.code == "USAGE_MONTH_INVALID"


def test_summary_counts_and_prices_and_says_what_is_missing() -> None:
    table = prices()
    steps = [
        StepUsageRow("c1", "us-west-2", 1.0, 7200.0, 100.0),
        StepUsageRow("c2", "us-east-1", 2.0, 3600.0, 100.0),
        StepUsageRow("c2", "us-east-1", 2.0, None, None),
    ]
    estimates = [EstimateRow("w1", 1.25), EstimateRow("w2", None), EstimateRow("w3", 0.75)]
    report = summarise(
        customer_id="acme",
        month=Month(2025, 3),
        worksets_by_state={"completed": 2, "failed": 1},
        steps=steps,
        estimates=estimates,
        storage_bytes=None,
        storage_measured_at=None,
        max_storage_gb=10,
    )
    assert report.worksets_total == 3
    assert report.vcpu_hours == pytest.approx(3.0)
    expected = (
        2 * table.regions["us-west-2"].vcpu_hour_spot + 1 * table.regions["us-east-1"].vcpu_hour_spot * 2.0
    )
    assert report.actual_cost_usd == pytest.approx(expected)
    assert report.estimated_cost_usd == pytest.approx(2.0)
    assert (report.worksets_with_estimate, report.worksets_without_estimate) == (2, 1)
    assert (report.steps_measured, report.steps_unmeasured) == (2, 1)
    assert report.storage_gb is None
    text = " ".join(report.caveats)
    assert "1 finished step(s) have no CPU measurement" in text
    assert "1 workset(s) have no stored cost estimate" in text
    assert "current month only" in text


@given(used=st.integers(0, 10**13), incoming=st.integers(0, 10**12), quota=st.floats(0, 10_000))
def test_quota_refuses_exactly_when_over(used: int, incoming: int, quota: float) -> None:
    over = used + incoming > quota * GB
    try:
        check_storage_quota(used_bytes=used, max_storage_gb=quota, incoming_bytes=incoming)
    except StorageQuotaExceeded as exc:
        assert over and exc.code == "STORAGE_QUOTA_EXCEEDED"
        assert exc.details["used_bytes"] == used
    else:
        assert not over


async def _step(
    repo: StepRunRepository, workset_id: str, step: str, cluster: str, cpu: float | None, ended: datetime
) -> None:
    handle = JobHandle(
        executor="local",
        cluster=cluster,
        job_id="1",
        workset_id=workset_id,
        attempt=1,
        step=step,
        workdir="/tmp",
        submitted_at=ended,
    )
    run_id = (
        await repo.record_submitting(
            workset_id=workset_id, attempt=1, step=step, step_index=0, cluster=cluster, holder="test"
        )
    ).step_run_id
    await repo.record_submitted(run_id, handle)
    await repo.finish_step_run(
        run_id,
        JobStatus(
            handle=handle,
            state=JobState.SUCCEEDED,
            exit_code=0,
            ended_at=ended,
            resources=JobResources(cpu_seconds=cpu),
        ),
    )


async def test_monthly_usage_from_the_store_and_the_bucket(
    pool: asyncpg.Pool, moto_endpoint: str, database_url: str
) -> None:
    settings = customer_settings(moto_endpoint, database_url)
    cid = unique("usage")
    customer = (
        await AsyncCustomerManager(pool, settings).onboard_customer(
            customer_name="Usage Lab",
            customer_id=cid,
            email="u@usage.example",
            max_concurrent_worksets=2,
            max_storage_gb=0.000002,  # 2 kB
        )
    ).customer
    s3: Any = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-west-2")
    s3.put_object(Bucket=customer.s3_bucket, Key="results/a.bin", Body=b"x" * 1200)
    s3.put_object(Bucket=customer.s3_bucket, Key="intermediate/b.bin", Body=b"y" * 300)

    ids = []
    for i in range(3):
        result = await submit_workset(
            pool, tenant_id=cid, name=f"w{i}", spec={}, region="us-west-2", source="cli", actor="test"
        )
        ids.append(result.workset_id)
    other = await submit_workset(
        pool, tenant_id="someone-else", name="o", spec={}, region="us-west-2", source="cli", actor="test"
    )
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        sched = StepRunRepository(conn)
        await ClusterRepository(conn).upsert_cluster(
            ClusterRecord("east", "us-east-1", "local", 4, price_factor=1.5)
        )
        await _step(sched, ids[0], "qc", "east", 3600.0, now)
        await _step(sched, ids[1], "qc", "east", 1800.0, now)
        await _step(sched, ids[1], "align", "east", None, now)
        await _step(sched, other.workset_id, "qc", "east", 99999.0, now)  # another tenant: not counted
        intake = IntakeRepository(conn)
        await intake.save_validation(
            ids[0], ok=True, findings=[], estimate={"cost_usd_median": 0.5}, note=None
        )
        await intake.save_validation(ids[1], ok=True, findings=[], estimate=None, note=None)

    async with open_clients(settings) as aws:
        report = await monthly_usage(pool, aws.s3, cid, Month.of(now), now=now)
        with pytest.raises(StorageQuotaExceeded):
            await check_customer_storage(pool, aws.s3, cid, incoming_bytes=600)
        assert await check_customer_storage(pool, aws.s3, cid, incoming_bytes=400) == 1500
        earlier = await monthly_usage(pool, aws.s3, cid, Month(2020, 1), now=now)

    assert report.worksets_by_state == {"submitted": 3} and report.worksets_total == 3
    assert report.vcpu_hours == pytest.approx(1.5)
    assert report.actual_cost_usd == pytest.approx(1.5 * prices().regions["us-east-1"].vcpu_hour_spot * 1.5)
    assert report.steps_unmeasured == 1
    assert report.estimated_cost_usd == pytest.approx(0.5)
    assert (report.worksets_with_estimate, report.worksets_without_estimate) == (1, 2)
    assert report.storage_gb == pytest.approx(1500 / GB)
    assert report.storage_measured_at == now
    assert earlier.worksets_total == 0 and earlier.storage_gb is None

    rows = list(csv.DictReader(io.StringIO(to_csv([report, earlier]))))
    assert [r["month"] for r in rows] == [str(Month.of(now)), "2020-01"]
    assert rows[0]["worksets_by_state"] == "submitted=3"
    assert float(rows[0]["vcpu_hours"]) == pytest.approx(1.5)
    assert rows[1]["storage_gb"] == ""


async def test_usage_of_an_unknown_customer(pool: asyncpg.Pool, moto_endpoint: str) -> None:
    async with open_clients(customer_settings(moto_endpoint)) as aws:
        with pytest.raises(CustomerNotFound):
            await monthly_usage(pool, aws.s3, "nobody", Month(2025, 1))
