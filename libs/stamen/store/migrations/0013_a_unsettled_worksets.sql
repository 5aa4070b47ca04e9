-- The reconcilers' scan: worksets that wait for an event (submitted, validating, failed, retry_wait),
-- oldest change first.
CREATE INDEX worksets_unsettled ON worksets (state, updated_at)
    WHERE state IN ('submitted', 'validating', 'failed', 'retry_wait');
