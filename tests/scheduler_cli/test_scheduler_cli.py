"""`stamen cluster`, `stamen dlq`, `stamen tenant limit` and `stamen worksets retrying`, as a user runs
them (a subprocess per command), against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from stamen.store.unit_of_work import UnitOfWork
from tests.store.worksetkit import TO_DEAD_LETTERED, TO_FAILED, S, workset_in


def stamen(database_url: str, *args: str, ok: bool = True) -> Any:
    """The command's --json output; with ok=False, the error object of a command that must fail."""
    out = subprocess.run(
        [sys.executable, "-m", "stamen", *args, "--json"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode == 0) is ok, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    doc = json.loads(out.stdout)
    return doc if ok else doc["error"]


async def test_cluster_add_ls_drain_activate_and_rm(pool: asyncpg.Pool, database_url: str) -> None:
    db = database_url
    added = stamen(db, "cluster", "add", "hpc-west", "--region", "us-west-2", "--executor", "slurm",
                   "--max-concurrent", "8", "--price-factor", "0.7", "--data-location", "lab-bucket",
                   "--data-location", "us-west-2", "--config", '{"partition": "main"}')  # fmt: skip
    assert added == {"cluster": "hpc-west", "status": "active"}
    [row] = stamen(db, "cluster", "ls")
    assert row == {
        "name": "hpc-west", "region": "us-west-2", "executor": "slurm", "max_concurrent": 8,
        "price_factor": 0.7, "data_locations": ["lab-bucket", "us-west-2"], "status": "active",
        "config": {"partition": "main"}, "running": 0,
    }  # fmt: skip
    assert stamen(db, "cluster", "drain", "hpc-west")["status"] == "draining"
    assert [c["status"] for c in stamen(db, "cluster", "ls")] == ["draining"]
    assert stamen(db, "cluster", "activate", "hpc-west")["status"] == "active"
    assert [c["status"] for c in stamen(db, "cluster", "ls")] == ["active"]

    bad_kind = stamen(
        db, "cluster", "add", "k8s", "--region", "us-west-2", "--executor", "kubernetes", ok=False
    )
    assert bad_kind["code"] == "CLUSTER_EXECUTOR_INVALID" and "'kubernetes'" in bad_kind["message"]
    bad_config = stamen(
        db, "cluster", "add", "x", "--region", "us-west-2", "--config", "{partition", ok=False
    )
    assert bad_config["code"] == "CLUSTER_CONFIG_INVALID" and "--config is not JSON" in bad_config["message"]
    # The same model as the API and the clusters file: each bad option named, with why.
    bad_fields = stamen(db, "cluster", "add", "Bad Name", "--region", "mars", "--max-concurrent=-1", ok=False)
    assert bad_fields["code"] == "CLUSTER_INVALID"
    assert [part.split(":")[0] for part in bad_fields["message"].split("; ")] == [
        "NAME",
        "--region",
        "--max-concurrent",
    ]

    # A cluster that runs something cannot be removed.
    ws_id = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, attempt=1)
    async with UnitOfWork(pool) as uow:
        await uow.slots.acquire_lease(
            workset_id=ws_id, tenant_id="acme", cluster="hpc-west", holder="test", attempt=1
        )
        await uow.commit()
    assert stamen(db, "cluster", "ls")[0]["running"] == 1
    busy = stamen(db, "cluster", "rm", "hpc-west", ok=False)
    assert busy == {
        "code": "CLUSTER_BUSY",
        "message": "cluster 'hpc-west' runs 1 worksets; drain it and wait for them to finish",
    }
    async with UnitOfWork(pool) as uow:
        await uow.slots.release_lease(ws_id, 1, "completed")
        await uow.commit()
    assert stamen(db, "cluster", "rm", "hpc-west") == {"cluster": "hpc-west", "removed": True}
    assert stamen(db, "cluster", "ls") == []
    assert stamen(db, "cluster", "rm", "hpc-west", ok=False)["code"] == "CLUSTER_NOT_FOUND"
    assert stamen(db, "cluster", "drain", "nowhere", ok=False)["code"] == "CLUSTER_NOT_FOUND"


async def test_dlq_ls_show_requeue_and_purge(pool: asyncpg.Pool, database_url: str) -> None:
    db = database_url
    parked = await workset_in(
        pool, *TO_DEAD_LETTERED, tenant="lab-a", attempt=2, retry_count=1, max_retries=1
    )
    other = await workset_in(pool, *TO_DEAD_LETTERED, tenant="lab-b", attempt=1, max_retries=0)
    failed = await workset_in(pool, *TO_FAILED, tenant="lab-b", attempt=1)
    async with UnitOfWork(pool) as uow:
        for attempt in (1, 2):
            await uow.diagnoses.record(
                workset_id=parked, attempt=attempt, event_id=uuid.uuid4(), code="WS-NET-001",
                retry_class="transient", retryable=True, step="fetch", candidates=[],
                report=f"attempt {attempt}: could not connect to the endpoint",
            )  # fmt: skip
        await uow.commit()

    listed = stamen(db, "dlq", "ls")
    assert [(r["workset_id"], r["attempts"], r["last_code"]) for r in listed] == [
        (parked, 2, "WS-NET-001"),
        (other, 1, "WS-NET-001"),
    ]
    assert {r["reason"] for r in listed} == {"retries_exhausted"}
    assert [r["workset_id"] for r in stamen(db, "dlq", "ls", "--tenant", "lab-b")] == [other]
    shown = stamen(db, "dlq", "show", parked)
    assert shown["state"] == "dead_lettered" and shown["dead_letter"]["reason"] == "retries_exhausted"
    # `worksets ls` says why a dead-lettered workset stopped; other worksets have no reason.
    reasons = {w["id"]: w["dead_letter_reason"] for w in stamen(db, "worksets", "ls", "--tenant", "lab-b")}
    assert reasons == {other: "retries_exhausted", failed: None}
    assert [(d["attempt"], d["code"]) for d in shown["diagnoses"]] == [(1, "WS-NET-001"), (2, "WS-NET-001")]

    bad = stamen(db, "dlq", "requeue", parked, "--set", "samples=[]", ok=False)
    assert bad["code"] == "REQUEUE_CHANGE_INVALID" and bad["message"].startswith("samples: cannot be changed")
    malformed = stamen(db, "dlq", "requeue", parked, "--set", "max_retries", ok=False)
    assert malformed["code"] == "REQUEUE_CHANGE_INVALID" and "write key=value" in malformed["message"]
    requeued = stamen(
        db, "dlq", "requeue", parked, "--set", "max_retries=5", "--set", "priority=urgent", "--by", "alice"
    )
    assert requeued == {"workset_id": parked, "state": "queued"}
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(parked)
        history = await uow.worksets.history(parked)
    assert (ws.max_retries, ws.retry_count, ws.priority) == (5, 0, "urgent")
    assert history[-1].actor == "alice" and "max_retries=5" in history[-1].reason
    assert [r["workset_id"] for r in stamen(db, "dlq", "ls")] == [other]

    assert stamen(db, "dlq", "purge", other) == {"workset_id": other, "state": "archived"}
    assert stamen(db, "dlq", "ls") == []
    not_parked = stamen(db, "dlq", "purge", failed, ok=False)
    assert (
        not_parked["code"] == "WORKSET_NOT_REQUEUEABLE"
        and "not in the dead-letter queue" in not_parked["message"]
    )
    assert stamen(db, "dlq", "requeue", parked, ok=False)["code"] == "WORKSET_NOT_REQUEUEABLE"  # queued now


async def test_tenant_limit_keeps_the_customer_quota_and_retrying_lists_waiting_worksets(
    pool: asyncpg.Pool, database_url: str
) -> None:
    db = database_url
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO customers (customer_id, customer_name, email, s3_bucket, max_concurrent_worksets,
                                      max_storage_gb, region, status)
               VALUES ('lab-a', 'Lab A', 'a@lab.org', 'lab-a-bucket', 2, 100, 'us-west-2', 'active')"""
        )
    assert stamen(db, "tenant", "limit", "lab-a", "6") == {
        "tenant": "lab-a", "max_concurrent": 6, "customer_updated": True
    }  # fmt: skip
    assert stamen(db, "tenant", "limit", "lab-z", "1")["customer_updated"] is False
    too_many = stamen(db, "tenant", "limit", "lab-a", "20000", ok=False)
    assert too_many == {
        "code": "TENANT_LIMIT_INVALID",
        "message": "max_concurrent must be 0-10000, not 20000",
    }
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT max_concurrent_worksets FROM customers WHERE customer_id = 'lab-a'")
            == 6
        )
        limits = dict(await conn.fetch("SELECT tenant_id, max_concurrent FROM tenant_limits ORDER BY 1"))
    assert limits == {"lab-a": 6, "lab-z": 1}

    waiting = await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, tenant="lab-a", attempt=1, retry_count=1)
    later = await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, tenant="lab-b", attempt=1, retry_count=1)
    async with UnitOfWork(pool) as uow:
        await uow.timers.add_timer(waiting, "retry", datetime.now(UTC) - timedelta(seconds=1), {"attempt": 2})
        await uow.timers.add_timer(later, "retry", datetime.now(UTC) + timedelta(hours=1), {"attempt": 2})
        await uow.commit()
    rows = stamen(db, "worksets", "retrying")
    assert [(r["workset_id"], r["retry_count"], r["max_retries"]) for r in rows] == [
        (waiting, 1, 3),
        (later, 1, 3),
    ]
    assert [r["workset_id"] for r in stamen(db, "worksets", "retrying", "--due")] == [waiting]
    assert [r["workset_id"] for r in stamen(db, "worksets", "retrying", "--tenant", "lab-b")] == [later]
