-- What a finished workset really used, beside the validator's estimate (workset_validations).
CREATE TABLE workset_actuals (
    workset_id       TEXT PRIMARY KEY REFERENCES worksets (id) ON DELETE CASCADE,
    attempts         INTEGER NOT NULL,
    step_runs        INTEGER NOT NULL,
    cpu_seconds      DOUBLE PRECISION,
    vcpu_hours       DOUBLE PRECISION,
    elapsed_seconds  DOUBLE PRECISION,
    max_rss_mb       DOUBLE PRECISION,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
