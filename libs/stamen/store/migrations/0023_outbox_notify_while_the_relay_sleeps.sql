-- A transaction that writes events wakes the relay with a NOTIFY only when the relay may be asleep. A NOTIFY
-- costs PostgreSQL ~0.1 ms of CPU per transaction at commit (its queue, then waking the listening session,
-- which hands it to the relay's process), and a relay that has just published claims again after its batch
-- window anyway. The leading relay holds the session advisory lock RELAY_AWAKE_LOCK (stamen.relay) while
-- it does; every transaction that writes events holds OUTBOX_WRITERS_LOCK shared from here to its end.
-- A relay falling asleep first gives up RELAY_AWAKE_LOCK, then waits until it can take OUTBOX_WRITERS_LOCK
-- for an instant (every transaction that found it awake, and sent no NOTIFY, has ended), then claims once
-- more: a row is never left waiting for the poll. Writers never wait: both locks are tried, not waited for
-- (a writer that finds the relay asleep holds RELAY_AWAKE_LOCK shared to its end: a relay that cannot take
-- it then stays asleep for one more pass).
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock_shared(91621337943895) THEN  -- OUTBOX_WRITERS_LOCK ("STAMOW")
        IF NOT pg_try_advisory_xact_lock_shared(91621337940311) THEN  -- RELAY_AWAKE_LOCK ("STAMAW")
            RETURN NULL;  -- an awake relay holds it: it claims these rows after this commit
        END IF;
    END IF;
    -- The relay is asleep, or falling asleep right now: wake it on commit.
    PERFORM pg_notify('stamen_outbox', '');
    RETURN NULL;
END $$;
