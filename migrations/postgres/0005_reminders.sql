-- Appointment reminders and recall campaigns.

-- Rules set through the API (they replace the config file's rules for that organization).
CREATE TABLE reminder_rules (
    organization_id TEXT NOT NULL,
    id              TEXT NOT NULL,
    definition      TEXT NOT NULL,            -- JSON, see reminders::rules::Rule
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (organization_id, id)
);

-- One row per (appointment, rule, touch, appointment start): planned once, sent at most once.
CREATE TABLE reminder_touches (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    appointment_id  TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    touch_id        TEXT NOT NULL,
    appointment_start BIGINT NOT NULL,
    due_at          BIGINT NOT NULL,          -- after quiet-hours adjustment
    status          TEXT NOT NULL,            -- planned | sent | skipped | cancelled
    reason          TEXT,                     -- why skipped or cancelled, for people
    channel         TEXT,
    message_id      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (appointment_id, rule_id, touch_id, appointment_start)
);
CREATE INDEX reminder_touches_due ON reminder_touches (due_at) WHERE status = 'planned';
CREATE INDEX reminder_touches_patient ON reminder_touches (patient_id, status, updated_at);

CREATE INDEX appointments_updated ON appointments (updated_at);

-- What patients answered (never written into appointments.status: staff own that).
ALTER TABLE appointments ADD COLUMN confirmation TEXT;        -- confirmed | cancel_requested | reschedule_requested
ALTER TABLE appointments ADD COLUMN confirmation_at BIGINT;

CREATE TABLE cancellation_requests (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    appointment_id  TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,            -- cancel | reschedule
    inbound_item_id TEXT,
    status          TEXT NOT NULL,            -- open | done
    created_at      BIGINT NOT NULL
);

-- Leases for scheduled runs: one daemon of a fleet runs a schedule at a time.
CREATE TABLE leases (
    name            TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    until_at        BIGINT NOT NULL
);

CREATE TABLE campaigns (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    definition      TEXT NOT NULL,            -- JSON, see campaigns::Campaign
    created_at      BIGINT NOT NULL
);

CREATE TABLE campaign_targets (
    id              TEXT PRIMARY KEY,
    campaign_id     TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    recall_id       TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    status          TEXT NOT NULL,            -- sent | skipped
    reason          TEXT,
    channel         TEXT,
    message_id      TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (campaign_id, recall_id, attempt)
);
