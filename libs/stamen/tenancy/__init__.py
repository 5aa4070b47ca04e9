"""The tenant boundary at the edges: which S3 buckets a tenant may read or write (`may_access`, the one
rule every intake path, the scheduler and the portal's file views ask) and where they are recorded."""

from stamen.tenancy.buckets import (
    GRANT_ACCESS,
    BucketRight,
    GrantAccess,
    Mode,
    S3Location,
    TenantBuckets,
    access_findings,
    may_access,
    parse_s3_uri,
    refusal,
    spec_locations,
)
from stamen.tenancy.grants import (
    BucketGrant,
    BucketGrantError,
    BucketGrantInvalid,
    BucketGrantNotFound,
    BucketGrantRepository,
    tenant_buckets,
)

__all__ = [
    "GRANT_ACCESS",
    "BucketGrant",
    "BucketGrantError",
    "BucketGrantInvalid",
    "BucketGrantNotFound",
    "BucketGrantRepository",
    "BucketRight",
    "GrantAccess",
    "Mode",
    "S3Location",
    "TenantBuckets",
    "access_findings",
    "may_access",
    "parse_s3_uri",
    "refusal",
    "spec_locations",
    "tenant_buckets",
]
