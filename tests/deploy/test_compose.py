"""compose.yaml and the service folders stay in step."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = {"nats", "postgres", "s3"}


def service_folders() -> set[str]:
    return {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}


def test_every_service_folder_has_a_container_and_back() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    containers = set(compose["services"]) - INFRA
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
    assert "--jetstream" in compose["services"]["nats"]["command"]


def test_each_service_folder_has_its_parts() -> None:
    for name in service_folders():
        folder = ROOT / "services" / name
        assert (folder / "app.py").exists(), name
        if (folder / "handlers.py").exists():
            assert list((folder / "tests").glob("test_*.py")), f"{name} has handlers but no tests of its own"
        assert len((folder / "app.py").read_text().splitlines()) < 80, (
            f"{name}/app.py should stay a short table of contents"
        )
