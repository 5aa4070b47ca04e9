"""Secrets the embedded stack makes for itself, once per state folder, owner-only: the services' NATS
password, the embedded PostgreSQL's password and the API-key pepper. Made on first use, then reused, so a
restart keeps working connections, credentials and API keys."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRETS_DIR = "secrets"
POSTGRES_PASSWORD = "postgres.password"
API_KEY_PEPPER = "api_key_pepper"


def secret_file(path: Path) -> str:
    """The secret in `path` (mode 0600, its folder 0700), made now if there is none. URL-safe: some travel
    inside URLs (NATS_URL, DATABASE_URL)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another process: use that one
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def stack_secret(state_dir: Path, name: str) -> str:
    folder = state_dir / SECRETS_DIR
    secret = secret_file(folder / name)
    os.chmod(folder, 0o700)
    return secret
