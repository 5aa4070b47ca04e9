-- Intake (issue 3): S3 drop folders the watcher has handled, and each workset's validation report.

-- One row per (folder, daylily.ready version): the watcher compares sentinel ETags with these rows
-- instead of re-reading every workset folder on every pass.
CREATE TABLE s3_drops (
    bucket          TEXT NOT NULL,
    folder          TEXT NOT NULL,
    ready_etag      TEXT NOT NULL,
    ready_modified  TIMESTAMPTZ NOT NULL,
    tenant_id       TEXT NOT NULL,
    workset_id      TEXT REFERENCES worksets (id) ON DELETE SET NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('submitted', 'refused')),
    findings        JSONB NOT NULL DEFAULT '[]'::jsonb,
    sentinel        TEXT NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, folder, ready_etag)
);
CREATE INDEX s3_drops_workset ON s3_drops (workset_id) WHERE workset_id IS NOT NULL;

-- The validator's report (findings, estimate) kept beside the workset; later issues store the
-- actual resource use next to the estimate.
CREATE TABLE workset_validations (
    workset_id    TEXT PRIMARY KEY REFERENCES worksets (id) ON DELETE CASCADE,
    ok            BOOLEAN NOT NULL,
    findings      JSONB NOT NULL DEFAULT '[]'::jsonb,
    estimate      JSONB,
    note          TEXT,
    validated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
