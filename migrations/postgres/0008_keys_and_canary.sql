-- API key scopes and expiry (issue 11 item 13), and the fleet's at-rest key canary (item 15).

-- Space-separated scopes: send, read, admin. Keys created before scopes existed keep every
-- scope, as they had every right.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'send read admin';
-- Unix ms after which the key is refused; NULL: no expiry.
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
CREATE INDEX api_keys_org ON api_keys (organization_id, created_at);

-- One row: a known value sealed with the fleet's at-rest key, written by the first daemon to
-- start. A daemon whose keyring cannot open it refuses to start (crypto.rs, daemon.rs).
CREATE TABLE keyring_canary (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    sealed      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
