"""compose.yaml and the service folders stay in step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = {"nats", "postgres", "s3"}
# stamen's image in a supporting role: rendering nats-server's authorization block.
NATS_AUTH = {"nats-auth-init", "nats-auth"}


def service_folders() -> set[str]:
    return {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}


def test_every_service_folder_has_a_container_and_back() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    containers = set(compose["services"]) - INFRA - NATS_AUTH
    assert containers == service_folders()
    for name in containers:
        svc = compose["services"][name]
        assert svc["command"] == [name]
        assert {"nats", "postgres", "s3"} <= set(svc["depends_on"])
        assert "healthcheck" in svc


def test_infrastructure_has_healthchecks_and_volumes() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name in INFRA:
        assert "healthcheck" in compose["services"][name], name
        assert compose["services"][name].get("volumes"), name
    assert compose["services"]["nats"]["command"][:2] == ["--config", "/etc/nats/nats.conf"]


def test_the_nats_config_is_valid_with_a_rendered_authorization_block(tmp_path: Path) -> None:
    """deploy/nats.conf as compose mounts it, with what `stamen nats-auth render` writes, passes
    nats-server's own configuration check (`-t`)."""
    from stamen.natsauth import ServiceUser, TenantKey, generate_user_key, render_authorization
    from stamen.stack.servers import _which

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["nats"]["volumes"]
    assert "./deploy/nats.conf:/etc/nats/nats.conf:ro" in mounts and "nats-auth:/etc/nats/auth:ro" in mounts
    watcher = compose["services"]["nats-auth"]
    assert watcher["pid"] == "service:nats" and "--watch" in watcher["entrypoint"]
    (tmp_path / "auth").mkdir()
    _, public_key = generate_user_key()
    text = render_authorization(ServiceUser.from_password("pw"), [TenantKey("lab-a", public_key)])
    (tmp_path / "auth" / "stamen-auth.conf").write_text(text)
    conf = (ROOT / "deploy" / "nats.conf").read_text().replace('"/data"', json.dumps(str(tmp_path / "js")))
    (tmp_path / "nats.conf").write_text(conf)
    checked = subprocess.run(
        [_which("nats-server"), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_service_folder_has_its_parts() -> None:
    for name in service_folders():
        folder = ROOT / "services" / name
        assert (folder / "app.py").exists(), name
        if (folder / "handlers.py").exists():
            assert list((folder / "tests").glob("test_*.py")), f"{name} has handlers but no tests of its own"
        assert len((folder / "app.py").read_text().splitlines()) < 80, (
            f"{name}/app.py should stay a short table of contents"
        )
