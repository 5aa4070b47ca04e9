"""`stamen region ls|show|history|failover|failback`, --json and text, against a real PostgreSQL: one run
as a user runs it (a subprocess), the others in-process to keep the suite quick."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import typer
from typer.testing import CliRunner

from stamen.cli_regions import register
from stamen.domain.regions import RegionStatus
from stamen.store.regions import RegionRecord
from stamen.store.unit_of_work import UnitOfWork
from tests.scheduler_cli.test_scheduler_cli import stamen as stamen_process

APP = typer.Typer()
register(APP)


async def invoke(database_url: str, *args: str) -> tuple[int, str]:
    # In a thread: the command runs its own event loop.
    result = await asyncio.to_thread(CliRunner().invoke, APP, list(args), env={"DATABASE_URL": database_url})
    return result.exit_code, result.stdout


async def stamen(database_url: str, *args: str, ok: bool = True) -> Any:
    code, out = await invoke(database_url, *args, "--json")
    assert (code == 0) is ok, out
    doc = json.loads(out)
    return doc if ok else doc["error"]


async def text(database_url: str, *args: str) -> str:
    code, out = await invoke(database_url, *args)
    assert code == 0, out
    return out


async def test_region_commands(pool: asyncpg.Pool, database_url: str) -> None:
    db = database_url
    async with UnitOfWork(pool) as uow:
        await uow.regions.sync_registry([
            RegionRecord("us-west-2", True, None, "ctl-usw2", ("nats://n1:4222",), "db1:5432", ("west-hpc",)),
            RegionRecord("eu-west-1", False, None, "ctl-euw1", ("nats://n3:4222",), None),
        ])  # fmt: skip
        await uow.regions.save_probe_round(
            "eu-west-1", verdict=RegionStatus.DEGRADED, verdict_reason="s3 ctl-euw1: 403", latency=(80.0, 70.0, 140.0, 190.0),
            probes=[{"kind": "s3", "target": "ctl-euw1", "ok": False, "latency_ms": None, "detail": "403"}],
            probed_at=datetime.now(UTC),
        )  # fmt: skip
        await uow.commit()
    rows = stamen_process(db, "region", "ls")
    assert [(r["region"], r["status"], r["primary"], r["health_reported"]) for r in rows] == [
        ("eu-west-1", "healthy", False, True),
        ("us-west-2", "healthy", True, False),
    ]
    assert rows[0]["latency_ms"] == {"average": 80.0, "p50": 70.0, "p95": 140.0, "p99": 190.0}
    listing = await text(db, "region", "ls")
    assert "us-west-2*" in listing and "140.0" in listing

    missing = await stamen(db, "region", "show", "ap-south-1", ok=False)
    assert missing["code"] == "REGION_NOT_FOUND" and "eu-west-1, us-west-2" in missing["message"]
    shown = await stamen(db, "region", "show", "eu-west-1")
    assert shown["last_round"]["verdict"] == "degraded" and shown["probes"][0]["detail"] == "403"
    assert "FAIL s3" in await text(db, "region", "show", "eu-west-1")

    failed = await stamen(
        db, "region", "failover", "us-west-2", "--reason", "drill", "--actor", "operator:ann"
    )
    assert (failed["previous"], failed["status"], failed["forced_by"]) == ("healthy", "down", "operator:ann")
    assert (await stamen(db, "region", "failover", "us-west-2", "--reason", "x", ok=False))[
        "code"
    ] == "REGION_ALREADY_FAILED_OVER"
    assert [r["status"] for r in await stamen(db, "region", "ls")] == ["healthy", "down"]
    back = await stamen(
        db, "region", "failback", "us-west-2", "--reason", "drill over", "--actor", "operator:ann"
    )
    assert back["status"] == "down" and back["switchover_requested"] is False  # the probes bring it back
    assert (await stamen(db, "region", "failback", "us-west-2", "--reason", "x", ok=False))[
        "code"
    ] == "REGION_NOTHING_TO_FAIL_BACK"

    history = await stamen(db, "region", "history", "us-west-2")
    assert [(c["to_status"], c["actor"]) for c in history["changes"]] == [("down", "operator:ann")]
    assert [(o["kind"], o["reason"]) for o in history["operations"]] == [
        ("failback", "drill over"),
        ("failover", "drill"),
    ]
    assert "failover (done) by operator:ann: drill" in await text(db, "region", "history")
