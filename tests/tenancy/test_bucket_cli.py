"""`stamen bucket grant|ls|revoke` as an operator runs them (a subprocess per command), and the pure rule."""

from __future__ import annotations

import asyncpg

from stamen.tenancy import BucketRight, TenantBuckets, may_access, spec_locations
from tests.scheduler_cli.test_scheduler_cli import stamen


async def test_grant_list_change_and_revoke(pool: asyncpg.Pool, database_url: str) -> None:
    db = database_url
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO customers (customer_id, customer_name, email, s3_bucket, max_concurrent_worksets,
                                      max_storage_gb, region, status)
               VALUES ('acme', 'Acme', 'ops@acme.example', 'stamen-acme-us-west-2', 2, 10, 'us-west-2', 'active')"""
        )
    granted = stamen(db, "bucket", "grant", "acme", "shared-refs", "--note", "GRCh38 bundle")
    assert (granted["access"], granted["created"], granted["note"]) == ("read-only", True, "GRCh38 bundle")
    assert granted["granted_by"].startswith("cli:")
    changed = stamen(db, "bucket", "grant", "acme", "shared-refs", "--read-write")
    assert (changed["access"], changed["created"]) == ("read-write", False)
    assert [(r["bucket"], r["access"], r["source"]) for r in stamen(db, "bucket", "ls", "acme")] == [
        ("stamen-acme-us-west-2", "read-write", "own"),
        ("shared-refs", "read-write", "grant"),
    ]
    assert [r["tenant"] for r in stamen(db, "bucket", "ls")] == ["acme"]
    bad = stamen(db, "bucket", "grant", "acme", "Not_A_Bucket", ok=False)
    assert bad["code"] == "BUCKET_GRANT_INVALID" and "bucket name" in bad["message"]
    assert stamen(db, "bucket", "revoke", "acme", "shared-refs")["bucket"] == "shared-refs"
    missing = stamen(db, "bucket", "revoke", "acme", "shared-refs", ok=False)
    assert missing["code"] == "BUCKET_GRANT_NOT_FOUND"
    assert [r["source"] for r in stamen(db, "bucket", "ls", "acme")] == ["own"]


def test_the_rule() -> None:
    rights = TenantBuckets(
        "acme", (BucketRight("acme-data", "read-write", "own"), BucketRight("refs", "read-only", "grant"))
    )
    assert may_access(rights, "s3://acme-data/x/y.fq.gz", "write")
    assert may_access(rights, "s3://refs/hg38/", "read") and not may_access(rights, "s3://refs/out/", "write")
    for uri in (
        "s3://acme-data-b/x",
        "s3://other/x",
        "s3://",
        "acme-data/x",
        "s3://ACME-DATA/x",
        "https://x",
    ):
        assert not may_access(rights, uri, "read"), uri
    # URIs are found wherever a spec names them (a field added later included); labels are only text.
    found = spec_locations(
        {
            "samples": [{"r1": "s3://a/1.fq", "new_field": ["x s3://b/2 y"]}],
            "export_uri": "s3://c/out/",
            "labels": {"origin": "s3://d/"},
            "daylily": {"s3_bucket": "e", "s3_prefix": "/w/"},
        }
    )
    assert [(loc.field, loc.uri, loc.mode) for loc in found] == [
        ("samples[0].r1", "s3://a/1.fq", "read"),
        ("samples[0].new_field[0]", "s3://b/2", "read"),
        ("export_uri", "s3://c/out/", "write"),
        ("daylily.s3_bucket", "s3://e/w/", "write"),
    ]
