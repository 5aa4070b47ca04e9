-- Fewer index entries per row version of `worksets` and `step_runs`. Every new version of a row gets an entry
-- in every index of its table (in a partial index, if it matches), unless the update is HOT (heap-only: no
-- indexed column changed, and the row's page has room for the new version). bench/lifecycle.py prints each
-- table's updates and HOT updates per workset.

-- 1. A step's end changes a workset's `version` and `updated_at` only, yet no save was HOT: `updated_at` was in
-- the reconcilers' index (worksets_unsettled, migration 0013_a), and one indexed column changed is enough. The
-- reconcilers now measure a wait from when the workset entered its state: a column that moves with the
-- state only (and a state change is never HOT anyway, the state being indexed).

-- When the workset entered its current state (`WorksetRepository.save` sets it when the state moves; a new
-- row gets its creation time). Taken from `updated_at` for every workset not in a final state; NULL for those
-- already final (nothing asks it of them).
ALTER TABLE worksets ADD COLUMN state_entered_at TIMESTAMPTZ;
ALTER TABLE worksets ALTER COLUMN state_entered_at SET DEFAULT now();
UPDATE worksets SET state_entered_at = updated_at
WHERE state NOT IN ('completed', 'rejected', 'dead_lettered', 'cancelled', 'archived');

-- The reconcilers' scan (stamen.store.recovery): the worksets that wait for an event, longest wait first.
CREATE INDEX worksets_unsettled_since ON worksets (state, state_entered_at)
    WHERE state IN ('submitted', 'validating', 'failed', 'retry_wait');
DROP INDEX worksets_unsettled;

-- Room on each page for new versions of its rows: a HOT update needs it on the row's own page, and the
-- worksets in flight together were created together, so they share pages. Measured with bench/lifecycle.py
-- (step ends saved HOT, of ~2 per workset): 1.07 at fillfactor 80, 1.30 at 70, 1.64 at 60, 1.71 at 50.
-- Pages written from now on keep 40% free (a page holds ~6 worksets, not ~11); old ones are as they are.
ALTER TABLE worksets SET (fillfactor = 60);

-- 2. Indexes that cost an entry per row version for rows no query looks for in them.
-- (worksets_tenant_state (tenant_id, state) stays, though a prefix of worksets_tenant_state_created: its
-- duplicates are deduplicated, so at 200,000 worksets it is 1.4 MB to the other's 19.8 MB, and the
-- dashboards' counts by state read it: without it, a 100,000-workset tenant's took 2x as long and the
-- count over all tenants became a sequential scan of the table.)

-- The idempotency key is unique per tenant where there is one: worksets submitted without one (NULL, which
-- never conflicts) had an entry each, for every version of their row.
CREATE UNIQUE INDEX worksets_idempotency_key ON worksets (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE worksets DROP CONSTRAINT worksets_tenant_id_idempotency_key_key;

-- Step runs are read by when they ended (this month's metered CPU, usage): one that has not ended was an entry
-- too, twice (recorded 'submitting', then 'running').
CREATE INDEX step_runs_ended_at ON step_runs (ended_at) WHERE ended_at IS NOT NULL;
DROP INDEX step_runs_ended;
