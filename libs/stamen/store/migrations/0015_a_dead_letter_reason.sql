-- Every failure stamen will not retry ends in the dead-letter queue (issue 14): `reason` becomes a
-- token (retries_exhausted | not_retryable | retries_disabled, stamen.retry.GiveUpReason) and the
-- sentence that used to be the reason moves to `detail`. Only exhausted budgets were parked before.
ALTER TABLE dead_letters ADD COLUMN detail TEXT NOT NULL DEFAULT '';
UPDATE dead_letters SET detail = reason, reason = 'retries_exhausted'
 WHERE reason NOT IN ('retries_exhausted', 'not_retryable', 'retries_disabled');
CREATE INDEX dead_letters_open_by_reason ON dead_letters (reason) WHERE requeued_at IS NULL;
