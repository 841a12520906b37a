-- Urgent notifications: a staff directory with on-call order, one alert per urgent message
-- (read state, escalation level), one notification per (message, recipient, channel).

CREATE TABLE staff (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    external_id     TEXT NOT NULL,
    name            TEXT NOT NULL,
    sms             TEXT,
    email           TEXT,
    on_call_rank    BIGINT,                  -- 1 = first called; NULL = not on call
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, external_id)
);

CREATE TABLE urgent_alerts (
    message_id      TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    patient_id      TEXT,
    audience        TEXT NOT NULL,            -- patient | staff | both
    escalation_level BIGINT NOT NULL DEFAULT 0,
    next_escalation_at BIGINT,
    read_at         BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX urgent_alerts_due ON urgent_alerts (next_escalation_at) WHERE read_at IS NULL;

CREATE TABLE urgent_notifications (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    recipient_kind  TEXT NOT NULL,            -- patient | staff
    recipient_id    TEXT NOT NULL,
    channel         TEXT NOT NULL,
    address         TEXT NOT NULL,
    status          TEXT NOT NULL,            -- sent | digested | failed_over
    digest_of       TEXT,                     -- the notification this one was folded into
    notification_message_id TEXT,             -- the outbound message that carried it
    escalation_level BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    UNIQUE (message_id, recipient_id, channel)
);
CREATE INDEX urgent_notifications_recipient ON urgent_notifications (recipient_id, channel, created_at);

CREATE TABLE cursors (
    name            TEXT PRIMARY KEY,
    position        BIGINT NOT NULL
);

-- The notifier reads urgent and read events by time (ids can commit out of order).
CREATE INDEX events_kind_time ON events (kind, created_at);
