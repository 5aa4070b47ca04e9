-- What was done with each message parked in the STAMEN_DLQ stream (replayed or resolved), by whom and
-- why. One row per parking (the parked copy's Nats-Msg-Id), so two replicas or an operator and a
-- reconciler cannot both act on one; the stream's copy is deleted after the row commits.
CREATE TABLE dlq_message_actions (
    dlq_msg_id  TEXT PRIMARY KEY,
    dlq_seq     BIGINT NOT NULL,
    consumer    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    event_id    TEXT,
    workset_id  TEXT,
    action      TEXT NOT NULL CHECK (action IN ('replayed', 'resolved')),
    detail      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dlq_message_actions_event ON dlq_message_actions (event_id, consumer);
