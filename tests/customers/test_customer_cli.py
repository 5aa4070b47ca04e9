"""The customer and API-key commands, as a user runs them, against PostgreSQL and moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.customers.awskit import unique


def stamen(database_url: str, moto: str, pool_name: str, *args: str, check: bool = True) -> Any:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "STAMEN_COGNITO_CREATE_POOL": "true",
        "STAMEN_COGNITO_USER_POOL_NAME": pool_name,
    }
    out = subprocess.run(
        [sys.executable, "-m", "stamen", *args, "--json"], env=env, capture_output=True, text=True, timeout=60
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

    missing, code = stamen(database_url, moto_endpoint, pool_name, "customer", "show", "nobody", check=False)
    assert code == 1 and missing["error"]["code"] == "CUSTOMER_NOT_FOUND"
