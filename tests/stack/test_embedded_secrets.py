"""The embedded stack's own secrets: PostgreSQL asks for a generated password (scram-sha-256) instead of
trusting every local user as its superuser, also after upgrading a data folder made without one; the
secrets are made once per state folder, owner-only, and reused."""

from __future__ import annotations

import stat
from pathlib import Path

import asyncpg

from stamen.stack.secrets import API_KEY_PEPPER, POSTGRES_PASSWORD, stack_secret
from stamen.stack.servers import PostgresServer


async def refused(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return True
    await conn.close()
    return False


async def test_postgres_needs_the_generated_password_also_after_an_upgrade(tmp_path: Path) -> None:
    state = tmp_path / "state"
    password = stack_secret(state, POSTGRES_PASSWORD)
    assert stack_secret(state, POSTGRES_PASSWORD) == password and len(password) >= 40  # made once, reused
    assert stack_secret(state, API_KEY_PEPPER) != password
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    for name in (POSTGRES_PASSWORD, API_KEY_PEPPER):
        assert stat.S_IMODE((state / "secrets" / name).stat().st_mode) == 0o600

    # A data folder from before passwords (trust), then started with one: switched over on the spot.
    old = PostgresServer(state / "postgres").start()
    assert not await refused(old.url)
    old.stop()
    server = PostgresServer(state / "postgres", port=old.port, password=password).start()
    try:
        bare = server.url.replace(f":{password}@", "@")
        wrong = server.url.replace(password, "guess")
        assert await refused(bare) and await refused(wrong)
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("SHOW password_encryption") == "scram-sha-256"
            assert (
                await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
            ).startswith("SCRAM-SHA-256$")
        finally:
            await conn.close()
    finally:
        server.stop()


async def test_a_new_data_folder_is_made_with_the_password(tmp_path: Path) -> None:
    password = stack_secret(tmp_path, POSTGRES_PASSWORD)
    server = PostgresServer(tmp_path / "pg", password=password).start()
    try:
        assert await refused(server.url.replace(password, "guess"))
        assert not await refused(server.url)
        assert "trust" not in server._hba_rules()
        assert not (tmp_path / "pg" / ".initdb-password").exists()
    finally:
        server.stop()
    again = PostgresServer(tmp_path / "pg", password=password).start()  # restart: same password, same data
    try:
        assert not await refused(again.url)
    finally:
        again.stop()
