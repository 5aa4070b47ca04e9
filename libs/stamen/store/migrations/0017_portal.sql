-- The customer web portal (services/portal/web): browser sessions, sign-up invitations, and the indexes
-- its workset pages need to stay fast at 100,000 worksets in one tenant (keyset pages, counts, charts).

-- A signed-in browser. The cookie holds a random secret; only its SHA-256 is stored here. The Cognito
-- token (the access token, or the id token where only those are accepted) and the refresh token stay
-- server-side, never in the cookie: every page request verifies the token as the API verifies a bearer.
CREATE TABLE portal_sessions (
    id_hash           TEXT PRIMARY KEY,
    subject           TEXT NOT NULL,
    username          TEXT,
    token             TEXT NOT NULL,
    refresh_token     TEXT,
    token_expires_at  TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);
CREATE INDEX portal_sessions_subject ON portal_sessions (subject);

-- Sign-up is by invitation: a user's tenant is fixed at sign-up, so it comes from an invitation that a
-- user of that tenant (or an operator) made, never from the sign-up form.
CREATE TABLE portal_invitations (
    id          UUID PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    invited_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    accepted_at TIMESTAMPTZ
);
CREATE INDEX portal_invitations_customer ON portal_invitations (customer_id, created_at);

-- What the worksets page searches (name and sample ids, lower case) and filters on (pipeline).
ALTER TABLE worksets
    ADD COLUMN search_text TEXT GENERATED ALWAYS AS (
        lower(name || ' ' || jsonb_path_query_array(spec, '$.samples[*].id')::text || ' '
              || jsonb_path_query_array(spec, '$.samples[*].sample_id')::text)
    ) STORED,
    ADD COLUMN pipeline TEXT GENERATED ALWAYS AS (spec ->> 'pipeline') STORED;

-- Keyset pages newest/oldest first and by name, per tenant and for operators across tenants; the state
-- filter keeps its own order so a page of one state is an index range too.
CREATE INDEX worksets_tenant_created ON worksets (tenant_id, created_at, id);
CREATE INDEX worksets_tenant_state_created ON worksets (tenant_id, state, created_at, id);
CREATE INDEX worksets_tenant_name ON worksets (tenant_id, name, id);
CREATE INDEX worksets_created ON worksets (created_at, id);
-- Cost per day (dashboard and usage charts).
CREATE INDEX workset_actuals_recorded ON workset_actuals (recorded_at);
