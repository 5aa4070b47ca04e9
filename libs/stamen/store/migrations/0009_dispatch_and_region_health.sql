-- Dispatch records a step before it submits it; region health for admission.

-- The dispatcher commits a step run as 'submitting' (no job handle yet) before it calls the
-- executor, and stores the handle afterwards. A crash in between leaves this row behind, so the job
-- is never unrecorded; the next pass reconciles it (see services/scheduler/dispatch.py).
ALTER TABLE step_runs
    ALTER COLUMN handle DROP NOT NULL,
    ADD COLUMN submitted_by TEXT;
CREATE INDEX step_runs_submitting ON step_runs (started_at) WHERE state = 'submitting';

-- Health of each region. Owner: the regions service (it does not write it yet); the scheduler's
-- admission reads it every pass. A region without a row is unknown and scored as healthy.
CREATE TABLE region_health (
    region      TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('healthy', 'degraded', 'down')),
    reason      TEXT NOT NULL DEFAULT '',
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
