-- Scheduler: clusters, slot leases (concurrency limits), runs and steps, durable timers.

CREATE TABLE clusters (
    name            TEXT PRIMARY KEY,
    region          TEXT NOT NULL,
    executor        TEXT NOT NULL CHECK (executor IN ('local', 'slurm')),
    max_concurrent  INTEGER NOT NULL CHECK (max_concurrent >= 0),
    price_factor    DOUBLE PRECISION NOT NULL DEFAULT 1.0 CHECK (price_factor > 0),
    data_locations  TEXT[] NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining', 'down')),
    config          JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per-tenant concurrency quota; tenants without a row get the scheduler's default.
CREATE TABLE tenant_limits (
    tenant_id       TEXT PRIMARY KEY,
    max_concurrent  INTEGER NOT NULL CHECK (max_concurrent >= 0)
);

ALTER TABLE worksets
    ADD COLUMN cluster            TEXT,
    ADD COLUMN placement_reason   TEXT,
    ADD COLUMN placement_scores   JSONB,
    ADD COLUMN attempt            INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN retry_count        INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN max_retries        INTEGER NOT NULL DEFAULT 3,
    ADD COLUMN cancel_requested_by TEXT,
    ADD COLUMN max_duration_seconds INTEGER,
    ADD COLUMN queued_at          TIMESTAMPTZ;
CREATE INDEX worksets_queued ON worksets (priority, queued_at) WHERE state = 'queued';

-- One row per admitted workset while it holds a slot. Admission counts these under an advisory
-- lock, so no number of scheduler replicas can exceed a limit.
CREATE TABLE slot_leases (
    workset_id  TEXT PRIMARY KEY REFERENCES worksets (id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX slot_leases_cluster ON slot_leases (cluster);
CREATE INDEX slot_leases_tenant ON slot_leases (tenant_id);

-- Every admission, kept after release: who ran where, from when to when (and for fair share).
CREATE TABLE workset_runs (
    workset_id  TEXT NOT NULL REFERENCES worksets (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    tenant_id   TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    holder      TEXT NOT NULL,
    admitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    released_at TIMESTAMPTZ,
    outcome     TEXT,
    PRIMARY KEY (workset_id, attempt)
);
CREATE INDEX workset_runs_tenant ON workset_runs (tenant_id, admitted_at);

CREATE TABLE step_runs (
    id          BIGSERIAL PRIMARY KEY,
    workset_id  TEXT NOT NULL REFERENCES worksets (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    step        TEXT NOT NULL,
    step_index  INTEGER NOT NULL,
    cluster     TEXT NOT NULL,
    state       TEXT NOT NULL,
    handle      JSONB NOT NULL,
    exit_code   INTEGER,
    signal      INTEGER,
    reason      TEXT NOT NULL DEFAULT '',
    log_tail    TEXT NOT NULL DEFAULT '',
    resources   JSONB NOT NULL DEFAULT '{}'::jsonb,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at    TIMESTAMPTZ,
    UNIQUE (workset_id, attempt, step)
);
CREATE INDEX step_runs_active ON step_runs (cluster) WHERE state IN ('pending', 'running');

CREATE TABLE timers (
    id          BIGSERIAL PRIMARY KEY,
    workset_id  TEXT NOT NULL REFERENCES worksets (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    due_at      TIMESTAMPTZ NOT NULL,
    payload     JSONB NOT NULL DEFAULT '{}'::jsonb,
    fired_at    TIMESTAMPTZ,
    UNIQUE (workset_id, kind, due_at)
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;

CREATE FUNCTION timers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stamen_timers', '');
    RETURN NULL;
END $$;
CREATE TRIGGER timers_notify AFTER INSERT ON timers FOR EACH STATEMENT EXECUTE FUNCTION timers_notify();
