"""`stamen up --auth` as a new operator runs it: the user pool exists at start, and the commands of docs/api.md's
"Auth on, locally" recipe work exactly as written (an operator with a password, a customer, an invited user's
first sign-in through the new-password challenge). The real portal process also refuses an oversized
Authorization header with JSON, without echoing it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.stack.test_up import stack_env, stack_file, stop_stack

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def recipe() -> list[str]:
    """The lines of the recipe block in docs/api.md, as a user would paste them into the second terminal."""
    text = (REPO / "docs" / "api.md").read_text()
    block = re.search(
        r"<!-- auth-on recipe[^>]*-->\n```bash\n(.*?)```\n<!-- end of auth-on recipe -->", text, re.S
    )
    assert block, "docs/api.md lost its auth-on recipe block"
    lines = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0].startswith("stamen up --auth") and lines[1].startswith("export STAMEN_URL=")
    return lines[2:]  # terminal 1 is ours below; STAMEN_URL is the portal's real address


def start_auth_stack(state: Path, log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stamen", "up", "--auth", "--no-demo", "--state-dir", str(state), "--json"],
        stdout=subprocess.PIPE, stderr=log.open("a"), text=True, env=stack_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        record = json.loads(line)
        assert "error" not in record, record
        if "portal_url" in record:
            return proc, record
    raise AssertionError(f"stamen up --auth exited early ({proc.wait()}):\n{log.read_text()[-3000:]}")


def get(url: str, headers: dict[str, str]) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers.get_content_type(), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read().decode()


def test_the_documented_auth_on_recipe_works_as_written(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, status = start_auth_stack(state, tmp_path / "launcher.log")
    try:
        portal = status["portal_url"].rstrip("/")
        assert any("stamen user add" in line for line in status["sign_in"]), status["sign_in"]
        # The emulator's ready operator account: printed, kept owner-only, and it signs in as an operator.
        ready = json.loads((state / "demo-sign-in.json").read_text())
        assert (state / "demo-sign-in.json").stat().st_mode & 0o077 == 0
        assert any(ready["email"] in line and ready["password"] in line for line in status["sign_in"])
        login = urllib.request.Request(
            f"{status['portal_url'].rstrip('/')}/api/v1/auth/login",
            method="POST",
            data=json.dumps({"email": ready["email"], "password": ready["password"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(login, timeout=30) as answer:
            tokens = json.loads(answer.read())
        code, _, body = get(
            f"{status['portal_url'].rstrip('/')}/api/v1/customers",
            {"Authorization": f"Bearer {tokens['id_token']}"},
        )
        assert code == 200, body  # an operator-only route
        auth = stack_file(state)["auth"]
        assert auth["enabled"] and auth["user_pool_id"] and auth["app_client_id"]

        env = {**stack_env(), "STAMEN_URL": portal, "STAMEN_STATE_DIR": str(state),
               "STAMEN_CONFIG_DIR": str(tmp_path / "config"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
        script = "set -euo pipefail\n" + "\n".join(recipe()) + "\n"
        ran = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}"
        listed = json.loads(ran.stdout[ran.stdout.index("{") :])  # the last command's answer
        assert [c["customer_id"] for c in listed["items"]] == ["acme"]
        session = json.loads((tmp_path / "config" / "session.json").read_text())
        assert session["email"] == "lab@acme.example"

        # Sign-in is really required, and a monstrous Authorization header is answered as JSON, not echoed.
        assert get(f"{portal}/api/v1/worksets", {})[0] == 401
        for size in (9 * 1024, 1024 * 1024):
            code, kind, text = get(
                f"{portal}/api/v1/worksets", {"Authorization": "Bearer " + "s3cr3t" * (size // 6)}
            )
            assert (code, kind) == (431, "application/json") and "s3cr3t" not in text, (code, text[:200])
            assert json.loads(text)["code"] == "REQUEST_HEADER_TOO_LARGE"
        portal_log = (state / "logs" / "portal.log").read_text()
        assert "s3cr3t" not in portal_log and "Traceback" not in portal_log
    finally:
        stop_stack(proc)
