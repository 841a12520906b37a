-- Switchboard foundation schema (SQLite). Timestamps are unix epoch milliseconds (BIGINT).
-- Every row carries organization_id. Never edit an applied migration: add a new file.

CREATE TABLE organizations (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,            -- equals id; kept so every table has the column
    slug            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    time_zone       TEXT NOT NULL DEFAULT 'UTC',
    created_at      BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the whole token
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);

CREATE TABLE patients (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    external_id     TEXT NOT NULL,
    family_name     TEXT,
    given_name      TEXT,
    birth_date      TEXT,
    sex             TEXT,
    language        TEXT,
    time_zone       TEXT,
    merged_into     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (organization_id, external_id)
);

CREATE TABLE contact_points (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    patient_id      TEXT NOT NULL REFERENCES patients(id),
    system          TEXT NOT NULL,            -- phone | sms | email | fax | direct
    value           TEXT NOT NULL,
    use_code        TEXT,
    rank            INTEGER NOT NULL DEFAULT 1,
    created_at      BIGINT NOT NULL
);
CREATE INDEX contact_points_patient ON contact_points (patient_id);
CREATE INDEX contact_points_value ON contact_points (organization_id, value);

CREATE TABLE consents (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    patient_id      TEXT REFERENCES patients(id),
    channel         TEXT NOT NULL,            -- sms | email | fax | direct | * (any)
    purpose         TEXT NOT NULL,            -- messaging | reminders | part2 | ...
    recipient       TEXT NOT NULL DEFAULT '*',-- address the consent covers, or * (any)
    status          TEXT NOT NULL,            -- granted | revoked
    source          TEXT NOT NULL,            -- api | hl7 | sms-keyword | staff
    recorded_at     BIGINT NOT NULL,
    expires_at      BIGINT
);
CREATE INDEX consents_patient ON consents (patient_id, purpose);

CREATE TABLE threads (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    patient_id      TEXT REFERENCES patients(id),
    category        TEXT NOT NULL DEFAULT 'routine',
    status          TEXT NOT NULL DEFAULT 'open',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX threads_patient ON threads (patient_id);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    thread_id       TEXT NOT NULL REFERENCES threads(id),
    patient_id      TEXT REFERENCES patients(id),
    direction       TEXT NOT NULL,            -- outbound | inbound
    content         BLOB NOT NULL,            -- sealed (crypto.rs) JSON {subject, body}
    urgent          BOOLEAN NOT NULL DEFAULT FALSE,
    part2           BOOLEAN NOT NULL DEFAULT FALSE,
    metadata        TEXT NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL
);
CREATE INDEX messages_thread ON messages (thread_id, created_at);

CREATE TABLE idempotency_keys (
    organization_id TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (organization_id, key)
);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    message_id      TEXT NOT NULL REFERENCES messages(id),
    patient_id      TEXT,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    status          TEXT NOT NULL,
    status_rank     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    not_before      BIGINT,                   -- lease end while sending; next retry time
    enqueued_at     BIGINT,                   -- when a job was last pushed for it
    connector       TEXT,
    provider_ref    TEXT,
    reason          TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_active ON deliveries (status_rank, not_before) WHERE status IN ('queued', 'sending');
CREATE INDEX deliveries_provider_ref ON deliveries (connector, provider_ref);

CREATE TABLE delivery_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id TEXT NOT NULL,
    delivery_id     TEXT NOT NULL,
    status          TEXT NOT NULL,
    applied         BOOLEAN NOT NULL,
    source          TEXT NOT NULL,
    detail          TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX delivery_events_delivery ON delivery_events (delivery_id, id);

CREATE TABLE attachments (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    message_id      TEXT NOT NULL REFERENCES messages(id),
    filename        TEXT,
    content_type    TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    content         BLOB NOT NULL,            -- sealed bytes
    created_at      BIGINT NOT NULL
);
CREATE INDEX attachments_message ON attachments (message_id);

CREATE TABLE inbound_items (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    sender          TEXT NOT NULL,
    recipient       TEXT,
    status          TEXT NOT NULL,            -- received | filed | unmatched | quarantined | resolved
    reason          TEXT,
    patient_id      TEXT,
    thread_id       TEXT,
    message_id      TEXT,
    raw             BLOB NOT NULL,            -- sealed as received
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX inbound_items_status ON inbound_items (organization_id, status);

CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id TEXT NOT NULL,
    action          TEXT NOT NULL,            -- disclosure | forged_webhook | key_created | ...
    actor           TEXT NOT NULL,
    patient_id      TEXT,
    message_id      TEXT,
    delivery_id     TEXT,
    channel         TEXT,
    recipient       TEXT,
    outcome         TEXT,
    detail          TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX audit_events_org ON audit_events (organization_id, created_at);

CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id TEXT NOT NULL,
    kind            TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX events_org ON events (organization_id, id);

CREATE TABLE dead_letters (
    delivery_id     TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    requeued_at     BIGINT
);
