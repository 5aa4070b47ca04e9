-- The relay never lets one row hold back the others. A row the broker refuses (too large for its max
-- payload, refused by the stream) is retried after a growing delay and, after STAMEN_RELAY_MAX_ATTEMPTS,
-- parked: kept with its error for operators (`stamen outbox parked`, GET /api/v1/outbox/parked), who can
-- send it again (`stamen outbox retry`). The rows behind it are published meanwhile.
ALTER TABLE outbox
    ADD COLUMN attempts        INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_error      TEXT,
    ADD COLUMN next_attempt_at TIMESTAMPTZ,
    ADD COLUMN parked_at       TIMESTAMPTZ;
CREATE INDEX outbox_parked ON outbox (parked_at) WHERE parked_at IS NOT NULL;
