"""The customer and API-key commands, as a user runs them, against PostgreSQL and moto."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from stamen.customers.usage import CSV_COLUMNS
from tests.customers.awskit import unique


def _env(database_url: str, moto: str, pool_name: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "STAMEN_COGNITO_CREATE_POOL": "true",
        "STAMEN_COGNITO_USER_POOL_NAME": pool_name,
        "STAMEN_API_KEY_PEPPER": "pepper-for-the-cli-tests",  # API keys are hashed with it
    }


def stamen(database_url: str, moto: str, pool_name: str, *args: str, check: bool = True) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "stamen", *args, "--json"],
        env=_env(database_url, moto, pool_name),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout), out.returncode


def test_onboard_list_keys_and_usage(database_url: str, moto_endpoint: str) -> None:
    pool_name = unique("pool")
    tenant = unique("lab")
    added, _ = stamen(
        database_url,
        moto_endpoint,
        pool_name,
        "customer",
        "add",
        "Lab One",
        "--email",
        f"admin@{tenant}.org",
        "--customer-id",
        tenant,
        "--max-concurrent-worksets",
        "3",
    )
    assert added["created"] is True and added["customer_id"] == tenant and added["status"] == "active"
    again, _ = stamen(
        database_url,
        moto_endpoint,
        pool_name,
        "customer",
        "add",
        "Lab One",
        "--email",
        f"admin@{tenant}.org",
        "--customer-id",
        tenant,
        "--max-concurrent-worksets",
        "3",
    )
    assert again["created"] is False  # idempotent
    listed, _ = stamen(database_url, moto_endpoint, pool_name, "customer", "ls")
    assert [c["customer_id"] for c in listed] == [tenant]
    shown, _ = stamen(database_url, moto_endpoint, pool_name, "customer", "show", tenant)
    assert {r["kind"] for r in shown["resources"]} == {"s3_bucket", "sns_topic", "cognito_user"}
    limits, _ = stamen(database_url, moto_endpoint, pool_name, "tenant", "limit", tenant, "3")
    assert limits["max_concurrent"] == 3

    key, _ = stamen(database_url, moto_endpoint, pool_name, "api-key", "create", tenant, "lims")
    assert key["key"].startswith("stm_")
    keys, _ = stamen(database_url, moto_endpoint, pool_name, "api-key", "ls", tenant)
    assert [k["name"] for k in keys] == ["lims"] and "key" not in keys[0]  # the secret is never listed
    stamen(database_url, moto_endpoint, pool_name, "api-key", "revoke", tenant, str(keys[0]["id"]))
    assert stamen(database_url, moto_endpoint, pool_name, "api-key", "ls", tenant)[0] == []

    usage, _ = stamen(database_url, moto_endpoint, pool_name, "customer", "usage", tenant)
    assert usage["customer_id"] == tenant and usage["worksets_total"] == 0
    month = datetime.now(UTC).strftime("%Y-%m")
    as_csv = subprocess.run(
        [sys.executable, "-m", "stamen", "customer", "usage", tenant, "--month", month, "--csv"],
        env=_env(database_url, moto_endpoint, pool_name),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2  # the header row, then this customer's month
    row = dict(zip(rows[0], rows[1], strict=True))
    assert (row["customer_id"], row["month"], row["worksets_total"]) == (tenant, month, "0")
    assert float(row["storage_gb"]) == 0 and float(row["max_storage_gb"]) == 1000  # the bucket is measured

    missing, code = stamen(database_url, moto_endpoint, pool_name, "customer", "show", "nobody", check=False)
    assert code == 1 and missing["error"]["code"] == "CUSTOMER_NOT_FOUND"
