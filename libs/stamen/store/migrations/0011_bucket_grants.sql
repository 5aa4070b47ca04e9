-- Which S3 buckets a tenant may use besides its own (customers.s3_bucket, read-write): buckets an
-- operator grants it explicitly, read-only (e.g. a shared reference bucket) or read-write. Every intake
-- path and the scheduler ask stamen.tenancy.may_access before touching a URI a spec names.
-- No foreign key to customers: tenants that are not customers (the local demo) get grants too.
CREATE TABLE bucket_grants (
    tenant_id   TEXT NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    bucket      TEXT NOT NULL CHECK (bucket ~ '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$'),
    access      TEXT NOT NULL CHECK (access IN ('read-only', 'read-write')),
    granted_by  TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    granted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, bucket)
);
CREATE INDEX bucket_grants_bucket ON bucket_grants (bucket);
