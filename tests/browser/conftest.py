"""The portal in a real browser: Debian's Chromium driven by Playwright (the Python package; Playwright's
own browser download is never used), against `stamen up` with authentication on: every service running,
the embedded PostgreSQL, NATS and moto, the local cluster running real fastq-qc pipelines.

One stack and one browser serve every test here; each user gets a browser context of its own. Screenshots
land in $STAMEN_ARTIFACTS_DIR (default .artifacts/) under portal-screenshots/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.fixtures import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
# Flags that work on a machine with no display, no GPU and no outside network (see docs/portal.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POOL_REGION = "us-west-2"
PASSWORD = "Browser-Pass-1234!"


def why_no_browser() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package when it runs as root "
            "(scripts/install-chromium.sh); as root run: apt-get install chromium"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: run ./scripts/test (it installs the dev extras)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = why_no_browser()
    if reason:
        for item in items:
            if "tests/browser" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=f"browser tests cannot run: {reason}"))


@dataclass
class Stack:
    url: str
    database_url: str
    aws_endpoint_url: str
    state_dir: Path
    shots: Path
    cognito: Any
    pool_id: str

    def user(
        self, email: str, *, password: str = PASSWORD, operator: bool = False, tenant: str | None = None
    ) -> str:
        """A confirmed user with a permanent password (what an operator does with `stamen user add`)."""
        attributes = [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}]
        if tenant:
            attributes.append({"Name": "custom:customer_id", "Value": tenant})
        self.cognito.admin_create_user(
            UserPoolId=self.pool_id,
            Username=email,
            UserAttributes=attributes,
            MessageAction="SUPPRESS",
            TemporaryPassword="Temp-Pass-12345!",
        )
        self.cognito.admin_set_user_password(
            UserPoolId=self.pool_id, Username=email, Password=password, Permanent=True
        )
        if operator:
            self.cognito.admin_add_user_to_group(
                UserPoolId=self.pool_id, Username=email, GroupName="operators"
            )
        return email


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "DATABASE_URL", "AWS_ENDPOINT_URL"}}
    env.update(
        PYTHONUNBUFFERED="1",
        STAMEN_AUTH_ENABLED="true",
        STAMEN_API_KEY_PEPPER="browser-test-pepper",
        STAMEN_PORTAL_SECRET="browser-test-portal-secret",
        STAMEN_COGNITO_CREATE_POOL="true",
        STAMEN_LOCAL_CLUSTER_MAX_CONCURRENT="2",
        STAMEN_DRAIN_TIMEOUT_SECONDS="3",
    )
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = why_no_browser()
    if reason:
        pytest.skip(f"browser tests cannot run: {reason}")
    state = tmp_path_factory.mktemp("browser-stack")
    log = state / "launcher.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stamen", "up", "--state-dir", str(state / "s"), "--json", "--no-demo"],
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    record: dict[str, Any] = {}
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        record = json.loads(line)
        if "error" in record:
            raise AssertionError(f"stamen up failed: {record}")
        if "portal_url" in record or time.monotonic() > deadline:
            break
    if "portal_url" not in record:
        proc.kill()
        raise AssertionError(f"stamen up did not start; see {log}:\n{log.read_text()[-3000:]}")
    stack_file = json.loads((state / "s" / "stack.json").read_text())
    endpoint = stack_file["aws_endpoint_url"]
    cognito = boto3.client(
        "cognito-idp",
        region_name=POOL_REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    pool_id = _user_pool(cognito)
    shots = Path(os.environ.get("STAMEN_ARTIFACTS_DIR", REPO_ROOT / ".artifacts")) / "portal-screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    try:
        yield Stack(
            record["portal_url"].rstrip("/"),
            stack_file["database_url"],
            endpoint,
            state / "s",
            shots,
            cognito,
            pool_id,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _user_pool(cognito: Any) -> str:
    """The pool the portal uses ("stamen", made at first use), made now the same way so users can be added."""
    import asyncio

    from stamen.auth import cognito as idp

    # moto accepts any credentials; these keep botocore from looking for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

    async def ensure() -> str:
        async with idp.cognito_client(POOL_REGION, cognito.meta.endpoint_url) as client:
            pool = await idp.ensure_user_pool(client, name="stamen", operator_group="operators", create=True)
        return pool.user_pool_id

    return asyncio.run(ensure())


@pytest.fixture(scope="session")
async def chromium(stack: Stack) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # Playwright gives each launch a new, empty --user-data-dir of its own.
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
