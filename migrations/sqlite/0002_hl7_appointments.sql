-- HL7 v2 feeds: patient identifiers, appointments, recalls and the raw message archive.

ALTER TABLE patients ADD COLUMN address TEXT;          -- JSON {line1, line2, city, state, postal_code, country}

CREATE TABLE patient_identifiers (
    organization_id     TEXT NOT NULL,
    patient_id          TEXT NOT NULL REFERENCES patients(id),
    identifier          TEXT NOT NULL,
    assigning_authority TEXT NOT NULL DEFAULT '',
    identifier_type     TEXT,
    PRIMARY KEY (organization_id, assigning_authority, identifier)
);
CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);

CREATE TABLE appointments (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL REFERENCES organizations(id),
    patient_id          TEXT NOT NULL REFERENCES patients(id),
    filler_id           TEXT NOT NULL,
    placer_id           TEXT,
    start_at            BIGINT NOT NULL,              -- unix ms
    start_offset_minutes INTEGER NOT NULL DEFAULT 0,  -- the offset the source gave, kept for display
    duration_minutes    INTEGER,
    status              TEXT NOT NULL,                -- booked | cancelled | noshow | confirmed | ...
    appointment_type    TEXT,
    reason              TEXT,
    location            TEXT,
    location_code       TEXT,
    provider_id         TEXT,
    provider_name       TEXT,
    source              TEXT NOT NULL,                -- hl7 | api
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (organization_id, filler_id)
);
CREATE INDEX appointments_patient ON appointments (patient_id);
CREATE INDEX appointments_start ON appointments (organization_id, start_at);

CREATE TABLE recalls (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL REFERENCES organizations(id),
    patient_id          TEXT NOT NULL REFERENCES patients(id),
    external_id         TEXT NOT NULL,
    recall_type         TEXT NOT NULL,
    due_date            TEXT NOT NULL,                -- YYYY-MM-DD
    provider            TEXT,
    location            TEXT,
    status              TEXT NOT NULL DEFAULT 'open', -- open | booked | closed
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (organization_id, external_id)
);
CREATE INDEX recalls_patient ON recalls (patient_id);

CREATE TABLE hl7_messages (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL,
    control_id          TEXT,                         -- MSH-10; NULL when unparsable
    content_hash        TEXT,                         -- SHA-256 of the raw bytes
    sending_application TEXT NOT NULL DEFAULT '',
    sending_facility    TEXT NOT NULL DEFAULT '',
    message_type        TEXT,                         -- e.g. SIU^S12
    version             TEXT,
    raw                 BLOB NOT NULL,                -- sealed, exactly as received
    status              TEXT NOT NULL,                -- received | applied | error | rejected
    error               TEXT,
    ack                 TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    received_at         BIGINT NOT NULL,
    processed_at        BIGINT
);
CREATE UNIQUE INDEX hl7_messages_control ON hl7_messages (organization_id, sending_application, sending_facility, control_id, content_hash)
    WHERE control_id IS NOT NULL;
CREATE INDEX hl7_messages_status ON hl7_messages (organization_id, status);
