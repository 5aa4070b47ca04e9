-- Retry and dead letters: memory grows on resource retries; exhausted worksets are parked.
ALTER TABLE worksets ADD COLUMN memory_multiplier DOUBLE PRECISION NOT NULL DEFAULT 1.0;

CREATE TABLE dead_letters (
    workset_id   TEXT PRIMARY KEY REFERENCES worksets (id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    last_code    TEXT,
    parked_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    requeued_at  TIMESTAMPTZ,
    requeued_by  TEXT
);
