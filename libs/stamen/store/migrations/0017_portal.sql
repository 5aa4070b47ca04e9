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

-- What the worksets page searches: the words of the name and of the sample ids (full-text search, so a
-- GIN index finds a rare sample id among 100,000 worksets at once), and what it filters on (pipeline).
-- Hyphens, underscores and dots separate words, so `HG002-L1` is found by `hg002` and by `hg002-l1`.
ALTER TABLE worksets
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', translate(lower(name || ' '
            || coalesce(jsonb_path_query_array(spec, '$.samples[*].id')::text, '') || ' '
            || coalesce(jsonb_path_query_array(spec, '$.samples[*].sample_id')::text, '')), '-_.', '   '))
    ) STORED,
    ADD COLUMN pipeline TEXT GENERATED ALWAYS AS (spec ->> 'pipeline') STORED;
CREATE INDEX worksets_search ON worksets USING gin (search_vector);

-- Keyset pages newest/oldest first and by name, per tenant and for operators across tenants; the state
-- filter keeps its own order so a page of one state is an index range too.
CREATE INDEX worksets_tenant_created ON worksets (tenant_id, created_at, id);
CREATE INDEX worksets_tenant_state_created ON worksets (tenant_id, state, created_at, id);
CREATE INDEX worksets_tenant_name ON worksets (tenant_id, name, id);
CREATE INDEX worksets_created ON worksets (created_at, id);
-- A tenant's queue in admission order (priority, then age): the dashboard's positions read its head only.
CREATE INDEX worksets_tenant_queue ON worksets
    (tenant_id, (CASE priority WHEN 'urgent' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END), queued_at, id)
    WHERE state = 'queued';
-- Cost per day (dashboard and usage charts).
CREATE INDEX workset_actuals_recorded ON workset_actuals (recorded_at);
-- This month's metered CPU (dashboard) and the usage report read step runs by when they ended.
CREATE INDEX step_runs_ended ON step_runs (ended_at);
