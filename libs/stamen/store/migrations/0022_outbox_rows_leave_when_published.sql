-- An outbox row leaves the table in the relay's pass that published it: the claim deletes it, and the
-- pass's COMMIT, made once the broker has stored every row of the batch, makes that so (a relay that dies
-- before it rolls back, and the rows are published again: JetStream drops the copies by Nats-Msg-Id).
-- Marking rows published wrote a second version of each row (its body included) and an entry in the
-- primary key's and event_id's indexes, then an hourly purge deleted it: three writes per event, where a
-- delete is one. Nothing read published rows but the reconcilers' `stored_event`, which rebuilds the
-- event from the database when its row is gone (as it did past STAMEN_OUTBOX_RETENTION_DAYS).
-- Every row in the table is now waiting (or set aside, or parked), so the claim walks the primary key:
-- the partial index of unpublished rows was one more index entry per event.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;
