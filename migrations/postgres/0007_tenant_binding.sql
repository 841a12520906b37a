-- Inbound items no organization owns (sent to a number nobody claims, through a shared
-- connector): kept sealed for the operator, never filed into a tenant.
CREATE TABLE inbound_orphans (
    id           TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    connector    TEXT,
    provider_ref TEXT,
    sender       TEXT NOT NULL,
    recipient    TEXT,
    reason       TEXT NOT NULL,
    raw          BYTEA NOT NULL,           -- sealed, the orphan id as associated data
    created_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX inbound_orphans_provider ON inbound_orphans (connector, provider_ref);

-- Provider webhook events already applied (by the provider's event id): a replay is a no-op.
CREATE TABLE webhook_events (
    connector   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (connector, event_id)
);
