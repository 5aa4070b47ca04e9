"""`stamen nats-credential` and `stamen nats-auth render` as a user runs them, on real PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from stamen.natsauth import public_key_of
from tests.natsauth.test_tenant_credentials import add_customer


def stamen(database_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[Any, int]:
    out = subprocess.run(
        [sys.executable, "-m", "stamen", *args, "--json"],
        env={**os.environ, "DATABASE_URL": database_url, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        return json.loads(out.stdout), out.returncode
    except json.JSONDecodeError:
        raise AssertionError(out.stdout + out.stderr) from None


async def test_create_list_revoke_and_render(database_url: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    await add_customer(pool, "lab-a")
    seed_file = tmp_path / "lab-a.nk"
    created, rc = stamen(
        database_url, "nats-credential", "create", "lab-a", "lims", "--seed-file", str(seed_file)
    )
    assert rc == 0 and "seed" not in created and created["intake_subject"] == "stamen.intake.lab-a"
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    assert public_key_of(seed_file.read_text().strip()) == created["public_key"]
    again, rc = stamen(
        database_url, "nats-credential", "create", "lab-a", "lims", "--seed-file", str(seed_file)
    )
    assert rc == 1 and again["error"]["code"] == "FILE_EXISTS"  # a seed is never overwritten
    # The seed file is claimed first: no credential is created without a place for its seed, and a
    # refused credential leaves no empty seed file behind.
    nowhere, rc = stamen(
        database_url,
        "nats-credential",
        "create",
        "lab-a",
        "orphan",
        "--seed-file",
        str(tmp_path / "missing-dir" / "x.nk"),
    )
    assert rc == 1 and nowhere["error"]["code"] == "FILE_UNWRITABLE"
    refused, rc = stamen(
        database_url, "nats-credential", "create", "lab-z", "lims", "--seed-file", str(tmp_path / "lab-z.nk")
    )
    assert rc == 1 and refused["error"]["code"] == "NATS_CREDENTIAL_REQUEST_INVALID"
    assert not (tmp_path / "lab-z.nk").exists()
    printed, rc = stamen(database_url, "nats-credential", "create", "lab-a", "sequencer")
    assert rc == 0 and printed["seed"].startswith("SU")
    dup, rc = stamen(database_url, "nats-credential", "create", "lab-a", "sequencer")
    assert rc == 1 and dup["error"]["code"] == "NATS_CREDENTIAL_REQUEST_INVALID"

    listed, _ = stamen(database_url, "nats-credential", "ls", "lab-a")
    assert sorted(c["name"] for c in listed) == ["lims", "sequencer"] and all("seed" not in c for c in listed)

    missing, rc = stamen(database_url, "nats-auth", "render")
    assert rc == 1 and missing["error"]["code"] == "NATS_SERVICE_PASSWORD_MISSING"
    empty, rc = stamen(database_url, "nats-auth", "render", env={"STAMEN_NATS_SERVICE_PASSWORD": ""})
    assert rc == 1 and empty["error"]["code"] == "NATS_SERVICE_PASSWORD_MISSING"
    out = tmp_path / "auth" / "stamen-auth.conf"
    env = {"STAMEN_NATS_SERVICE_PASSWORD": "s3cret"}
    rendered, rc = stamen(database_url, "nats-auth", "render", "--output", str(out), env=env)
    assert rc == 0 and rendered["changed"] is True
    text = out.read_text()
    assert created["public_key"] in text and printed["public_key"] in text and "s3cret" not in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    revoked, rc = stamen(database_url, "nats-credential", "revoke", "lab-a", created["id"])
    assert rc == 0 and revoked["revoked_at"]
    stamen(database_url, "nats-auth", "render", "--output", str(out), env=env)
    assert created["public_key"] not in out.read_text() and printed["public_key"] in out.read_text()
    other, rc = stamen(database_url, "nats-credential", "revoke", "lab-b", printed["id"])
    assert rc == 1 and other["error"]["code"] == "NATS_CREDENTIAL_NOT_FOUND"
