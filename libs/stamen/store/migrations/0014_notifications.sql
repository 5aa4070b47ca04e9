-- Notifications (issue 13): preferences per owner (a customer id, or '@operators'), one delivery row per
-- (event, channel, recipient), the SNS subscriptions made from preferences, shared rate-limit buckets.
-- Owner of every table here: the notifier (deliveries) and the preference service (API, CLI).

CREATE TABLE notification_preferences (
    owner        TEXT PRIMARY KEY,
    preferences  JSONB NOT NULL,
    updated_by   TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Written by the notifier's consumers in the transaction of their inbox claim, so an event is
-- planned once however often it is delivered; the message is rendered then and kept here, so every
-- try and every resend sends the same words.
CREATE TABLE notification_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    event_id         UUID NOT NULL,
    event_type       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    owner            TEXT NOT NULL,
    workset_id       TEXT,
    occurred_at      TIMESTAMPTZ NOT NULL,  -- the event's time: a thread's deliveries go in this order
    thread           TEXT,                  -- what a tracker keeps one issue for: a workset, region, cluster
    channel          TEXT NOT NULL CHECK (channel IN ('sns', 'linear', 'webhook')),
    recipient        TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL UNIQUE,
    severity         TEXT NOT NULL,
    message          JSONB NOT NULL,
    -- pending: waits for next_attempt_at; sending: claimed until lease_until (a dead sender's claim
    -- expires and it is sent again, same key); delivered, failed (budget used up or refused), skipped
    -- (nothing to do, e.g. a comment for a Linear issue that was never opened).
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'delivered', 'failed', 'skipped')),
    digest           BOOLEAN NOT NULL DEFAULT false,
    batch_key        TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until      TIMESTAMPTZ,
    lease_holder     TEXT,
    last_error       TEXT,
    reference        TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    resent_at        TIMESTAMPTZ,
    resent_by        TEXT,
    UNIQUE (event_id, channel, recipient)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (channel, next_attempt_at)
    WHERE state IN ('pending', 'sending');
CREATE INDEX notification_deliveries_owner ON notification_deliveries (owner, id DESC);
CREATE INDEX notification_deliveries_failed ON notification_deliveries (id DESC) WHERE state = 'failed';
CREATE INDEX notification_deliveries_thread ON notification_deliveries (owner, channel, recipient, thread)
    WHERE thread IS NOT NULL;

-- Wake the delivery worker when something becomes due now (a new row, a resend).
CREATE FUNCTION notification_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stamen_notifications', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notification_deliveries_notify AFTER INSERT ON notification_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notification_deliveries_notify();

CREATE TABLE notification_subscriptions (
    owner             TEXT NOT NULL,
    protocol          TEXT NOT NULL CHECK (protocol IN ('email', 'sms')),
    endpoint          TEXT NOT NULL,
    topic_arn         TEXT NOT NULL,
    subscription_arn  TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending_confirmation', 'confirmed')),
    filter_policy     JSONB NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, protocol, endpoint)
);

CREATE TABLE notification_rate_buckets (
    key         TEXT PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
