-- Per-tenant NATS credentials: NKEY users allowed to publish only to stamen.intake.<tenant>.
-- Only the public key is stored; the seed is shown once to whoever created the credential.
CREATE TABLE nats_credentials (
    id          UUID PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX nats_credentials_customer ON nats_credentials (customer_id, created_at);
CREATE UNIQUE INDEX nats_credentials_live_name ON nats_credentials (customer_id, name) WHERE revoked_at IS NULL;

-- Whoever renders nats-server's authorization block (the embedded launcher, `stamen nats-auth render
-- --watch`) re-renders when a credential or a customer's status changes; NOTIFY is delivered on commit.
CREATE FUNCTION nats_auth_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stamen_nats_auth', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER nats_credentials_changed AFTER INSERT OR UPDATE OR DELETE ON nats_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION nats_auth_notify();
CREATE TRIGGER customers_status_changed AFTER UPDATE OF status OR DELETE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION nats_auth_notify();
