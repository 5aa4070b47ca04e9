-- Foundation: worksets with their history, the transactional outbox and the consumer inbox.

CREATE TABLE worksets (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    region          TEXT NOT NULL,
    priority        TEXT NOT NULL DEFAULT 'normal',
    spec            JSONB NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key TEXT,
    correlation_id  UUID NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX worksets_tenant_state ON worksets (tenant_id, state);

CREATE TABLE workset_history (
    id          BIGSERIAL PRIMARY KEY,
    workset_id  TEXT NOT NULL REFERENCES worksets (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    event_id    UUID,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (workset_id, version)
);

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    headers      JSONB NOT NULL,
    body         BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Wake relays as soon as a transaction that wrote events commits (NOTIFY is delivered on commit).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stamen_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
