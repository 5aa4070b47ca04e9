-- Customers (tenants), what onboarding created for each, and API keys for lab systems.

-- customer_id is the tenant id used everywhere else (worksets.tenant_id, NATS subjects, S3 prefixes).
CREATE TABLE customers (
    customer_id             TEXT PRIMARY KEY CHECK (customer_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    customer_name           TEXT NOT NULL,
    email                   TEXT NOT NULL,
    s3_bucket               TEXT NOT NULL UNIQUE,
    sns_topic_arn           TEXT,
    cognito_user_pool_id    TEXT,
    admin_username          TEXT,
    max_concurrent_worksets INTEGER NOT NULL CHECK (max_concurrent_worksets >= 0),
    max_storage_gb          DOUBLE PRECISION NOT NULL CHECK (max_storage_gb >= 0),
    billing_account_id      TEXT,
    cost_center             TEXT,
    region                  TEXT NOT NULL,
    -- onboarding: resources are being created (a crashed run is resumed or rolled back by the next);
    -- active: usable; suspended: kept, but refuses new work.
    status                  TEXT NOT NULL DEFAULT 'onboarding'
                            CHECK (status IN ('onboarding', 'active', 'suspended')),
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every cloud resource onboarding made, recorded *before* the call ('pending') and confirmed after
-- ('created'): a re-run adopts what it finds recorded, a rollback deletes it in reverse order.
CREATE TABLE customer_resources (
    id           BIGSERIAL PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('s3_bucket', 'sns_topic', 'cognito_user')),
    name         TEXT NOT NULL,
    arn          TEXT,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'created')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (customer_id, kind)
);

CREATE TABLE api_keys (
    id            UUID PRIMARY KEY,
    customer_id   TEXT NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- HMAC-SHA256(pepper, secret), hex; the secret itself is shown once and never stored.
    hash          TEXT NOT NULL,
    -- The public part of the key (`stm_<prefix>_...`): finds the row without scanning hashes.
    prefix        TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_customer ON api_keys (customer_id, created_at);
-- A name is unique among a tenant's live keys; a revoked key's name can be reused.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (customer_id, name) WHERE revoked_at IS NULL;
