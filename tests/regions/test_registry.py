"""The region registry file: the shipped example reads, mistakes are named with the field, and connection
strings keep their credentials out of the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from stamen.regions.registry import (
    PostgresEndpoint,
    PostgresUrl,
    RegionsFileError,
    default_registry,
    multi_host_dsn,
    nats_url_for,
    read_regions_file,
)
from stamen.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_three_region_registry_reads() -> None:
    registry = read_regions_file(REPO / "deploy" / "regions.yaml")
    assert [r.name for r in registry.regions] == ["us-west-2", "us-east-1", "eu-west-1"]
    assert registry.primary.name == "us-west-2"
    records = {r.name: r for r in registry.records()}
    assert records["us-east-1"].postgres_endpoint == "db-us-east-1.internal:5432"
    assert records["eu-west-1"].postgres_endpoint is None and records["eu-west-1"].is_primary is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("regions: []", "regions: List should have at least 1 item"),
        ("regions: [{name: mars-1}]", "regions.0.name: String should match pattern"),
        ("regions: [{name: us-west-2}]", "a region needs at least one of s3, nats, postgres or clusters"),
        (
            "regions: [{name: us-west-2, clusters: [a]}, {name: us-west-2, clusters: [b]}]",
            "repeated: us-west-2",
        ),
        (
            "regions: [{name: us-west-2, primary: true, clusters: [a]}, {name: us-east-1, primary: true, clusters: [b]}]",
            "only one region may be primary",
        ),
        ("regions: [{name: us-west-2, s3: {bucket: x}}]", "regions.0.s3.control_bucket: Field required"),
        ("regions: [{", "cannot read the regions file"),
    ],
)
def test_mistakes_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(text)
    with pytest.raises(RegionsFileError, match=message) as info:
        read_regions_file(path)
    assert info.value.code == "REGIONS_FILE_INVALID" and str(path) in str(info.value)


def test_connection_strings() -> None:
    url = "postgresql://stamen:secret@db1:5432/stamen?sslmode=require"
    assert (
        PostgresUrl.parse(url).for_host("db2", 6432)
        == "postgresql://stamen:secret@db2:6432/stamen?sslmode=require"
    )
    dsn = multi_host_dsn(
        url, [PostgresEndpoint(host="db-us-west-2.internal"), PostgresEndpoint(host="db-us-east-1.internal")]
    )
    assert dsn == (
        "postgresql://stamen:secret@db-us-west-2.internal:5432,db-us-east-1.internal:5432/stamen"
        "?sslmode=require&target_session_attrs=read-write"
    )
    assert PostgresUrl.parse(dsn).hosts == (("db-us-west-2.internal", 5432), ("db-us-east-1.internal", 5432))
    assert (
        nats_url_for("nats://n2:4222", "nats://stamen:pw@n1:4222,nats://stamen:pw@n3:4222")
        == "nats://stamen:pw@n2:4222"
    )
    default = default_registry(
        Settings(nats_url="nats://u:p@a:4222,nats://u:p@b:4222", database_url=url, region="eu-west-1")
    )
    [only] = default.records()
    assert (only.name, only.is_primary, only.nats_servers, only.postgres_endpoint) == (
        "eu-west-1",
        True,
        ("nats://a:4222", "nats://b:4222"),
        "db1:5432",
    )
