-- Operator console sessions (`/ops`): kept in the database so every daemon of a fleet knows
-- them; only the token's SHA-256 is stored. A session ends at sign-out, after
-- `server.console_idle_secs` without a request, or when its API key stops being valid.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    key_id TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_seen ON console_sessions (last_seen_at);
