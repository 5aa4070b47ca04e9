-- Multi-region: the region registry, region health with latency, its history, and the audit trail of
-- failovers (operator commands and the regions service's database promotions and fencing).

-- The registry as the regions service loaded it from its settings file (no credentials here).
-- Owner: the regions service (at start-up). Readers: CLI, portal API.
CREATE TABLE regions (
    name              TEXT PRIMARY KEY,
    is_primary        BOOLEAN NOT NULL DEFAULT false,
    s3_endpoint       TEXT,
    control_bucket    TEXT,
    nats_servers      TEXT[] NOT NULL DEFAULT '{}',
    postgres_endpoint TEXT,
    clusters          TEXT[] NOT NULL DEFAULT '{}',
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- region_health (0009) gains what the probes measured. `status` is what admission and the scheduler act
-- on; `verdict` is what the last round alone said (the status follows it only with hysteresis).
ALTER TABLE region_health
    ADD COLUMN latency_ms     DOUBLE PRECISION,
    ADD COLUMN latency_p50_ms DOUBLE PRECISION,
    ADD COLUMN latency_p95_ms DOUBLE PRECISION,
    ADD COLUMN latency_p99_ms DOUBLE PRECISION,
    ADD COLUMN verdict        TEXT CHECK (verdict IN ('healthy', 'degraded', 'down')),
    ADD COLUMN verdict_reason TEXT NOT NULL DEFAULT '',
    ADD COLUMN probes         JSONB NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN probed_at      TIMESTAMPTZ,
    ADD COLUMN changed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN forced_by      TEXT,
    ADD COLUMN forced_reason  TEXT;

-- Every status change, with the time it was decided (`at`) and the time it could be written
-- (`recorded_at`: later when the database itself was failing over).
CREATE TABLE region_health_history (
    id          BIGSERIAL PRIMARY KEY,
    region      TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL CHECK (to_status IN ('healthy', 'degraded', 'down')),
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    latency_ms  DOUBLE PRECISION,
    probes      JSONB NOT NULL DEFAULT '[]'::jsonb,
    event_id    UUID,
    at          TIMESTAMPTZ NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX region_health_history_region ON region_health_history (region, at DESC, id DESC);

-- Audit trail: forced failovers and fail-backs (operators), database promotions, switchovers and fencing
-- (the regions service), each with who, why, when and what was done. A switchover an operator asks for
-- is `requested` until the regions service has carried it out (`done`) or could not (`failed`).
CREATE TABLE region_operations (
    id      BIGSERIAL PRIMARY KEY,
    region  TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('failover', 'failback', 'database_promotion', 'database_switchover',
                                          'database_fencing', 'database_sync')),
    actor   TEXT NOT NULL,
    reason  TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT 'done' CHECK (outcome IN ('requested', 'done', 'failed')),
    detail  JSONB NOT NULL DEFAULT '{}'::jsonb,
    at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX region_operations_region ON region_operations (region, at DESC, id DESC);
CREATE INDEX region_operations_requested ON region_operations (id) WHERE outcome = 'requested';
