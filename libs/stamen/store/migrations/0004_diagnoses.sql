-- Every diagnosis of every failed attempt, kept for the dead-letter view and the portal.
CREATE TABLE diagnoses (
    workset_id  TEXT NOT NULL REFERENCES worksets (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    event_id    UUID NOT NULL,
    code        TEXT NOT NULL,
    retry_class TEXT NOT NULL,
    retryable   BOOLEAN NOT NULL,
    step        TEXT,
    candidates  JSONB NOT NULL,
    report      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workset_id, attempt)
);
