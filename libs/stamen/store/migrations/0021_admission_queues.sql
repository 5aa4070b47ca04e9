-- What fair share needs to know of the queue and the history, kept beside them so an admission reads a
-- few small rows instead of descending worksets_queue_heads once per (tenant, priority) and
-- workset_runs_tenant once per queued tenant (~600 index descents at 200 tenants, whatever the depth).
--
-- admission_queues: one row per (tenant, priority) with at least one queued workset, and how many.
-- tenant_admissions: when each tenant was last admitted (the latest workset_runs.admitted_at).
--
-- Both are derived from the truth by triggers in the transaction that changes it, whoever writes it
-- (the validator, a retry, a priority change, admission, a test's INSERT), so they commit or vanish
-- with it and cannot drift after a crash. Counting, not rules: what admission makes of them is
-- stamen.domain.admission.next_queues.
CREATE TABLE admission_queues (
    tenant_id TEXT NOT NULL,
    priority  TEXT NOT NULL,
    queued    INTEGER NOT NULL CHECK (queued >= 0),  -- 0 only inside the transaction that deletes the row
    PRIMARY KEY (tenant_id, priority)
);

CREATE TABLE tenant_admissions (
    tenant_id        TEXT PRIMARY KEY,
    last_admitted_at TIMESTAMPTZ NOT NULL
);

-- A workset leaving or entering a queue (a state, priority or tenant change, or a deletion): decrement,
-- then delete at zero while holding the row (a concurrent INSERT ... ON CONFLICT waits, then inserts a
-- fresh row), so a queue row exists exactly while its queue has a workset.
CREATE FUNCTION admission_queues_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    left_in_queue INTEGER;
BEGIN
    IF OLD.state = 'queued' THEN
        UPDATE admission_queues SET queued = queued - 1
        WHERE tenant_id = OLD.tenant_id AND priority = OLD.priority
        RETURNING queued INTO left_in_queue;
        IF left_in_queue = 0 THEN
            DELETE FROM admission_queues WHERE tenant_id = OLD.tenant_id AND priority = OLD.priority;
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.state = 'queued' THEN
        INSERT INTO admission_queues AS q (tenant_id, priority, queued) VALUES (NEW.tenant_id, NEW.priority, 1)
        ON CONFLICT (tenant_id, priority) DO UPDATE SET queued = q.queued + 1;
    END IF;
    RETURN NULL;
END $$;

-- Worksets inserted queued (a test's or a bench's seed; the API inserts them `submitted`): once per
-- statement, so a bulk insert updates each queue row once, not once per workset.
CREATE FUNCTION admission_queues_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO admission_queues AS q (tenant_id, priority, queued)
    SELECT tenant_id, priority, count(*) FROM inserted WHERE state = 'queued' GROUP BY tenant_id, priority
    ON CONFLICT (tenant_id, priority) DO UPDATE SET queued = q.queued + EXCLUDED.queued;
    RETURN NULL;
END $$;

-- Only changes of queue membership call the row function: every other update of a workset (most of
-- them) costs the WHEN test alone.
CREATE TRIGGER worksets_queued_insert AFTER INSERT ON worksets
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION admission_queues_insert();
CREATE TRIGGER worksets_queued_update AFTER UPDATE OF state, priority, tenant_id ON worksets
    FOR EACH ROW WHEN ((OLD.state = 'queued' OR NEW.state = 'queued')
                       AND (OLD.state IS DISTINCT FROM NEW.state OR OLD.priority IS DISTINCT FROM NEW.priority
                            OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id))
    EXECUTE FUNCTION admission_queues_count();
CREATE TRIGGER worksets_queued_delete AFTER DELETE ON worksets
    FOR EACH ROW WHEN (OLD.state = 'queued') EXECUTE FUNCTION admission_queues_count();

CREATE FUNCTION admission_queues_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM admission_queues;
    RETURN NULL;
END $$;
CREATE TRIGGER worksets_truncate AFTER TRUNCATE ON worksets
    FOR EACH STATEMENT EXECUTE FUNCTION admission_queues_truncate();

-- The latest admission per tenant, once per statement (admission inserts one run at a time; a seed
-- many); kept when old runs are deleted with their worksets (fair share goes by when a tenant was
-- last admitted, not by what history is left).
CREATE FUNCTION tenant_admissions_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_admissions AS t (tenant_id, last_admitted_at)
    SELECT tenant_id, max(admitted_at) FROM inserted GROUP BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE SET last_admitted_at = greatest(t.last_admitted_at, EXCLUDED.last_admitted_at);
    RETURN NULL;
END $$;
CREATE TRIGGER workset_runs_admitted AFTER INSERT ON workset_runs
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION tenant_admissions_record();

-- What was there before the triggers: worksets and workset_runs are locked by CREATE TRIGGER until
-- this migration commits, so nothing is written between these reads and the triggers taking over.
INSERT INTO admission_queues (tenant_id, priority, queued)
SELECT tenant_id, priority, count(*) FROM worksets WHERE state = 'queued' GROUP BY tenant_id, priority;
INSERT INTO tenant_admissions (tenant_id, last_admitted_at)
SELECT tenant_id, max(admitted_at) FROM workset_runs GROUP BY tenant_id;
