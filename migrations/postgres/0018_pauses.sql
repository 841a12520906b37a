-- Channels and connectors an operator paused (fleet-wide: every daemon reads this table).
-- A paused channel's deliveries, or those of a channel routed to a paused connector, wait:
-- workers do not claim them and the sweeper does not enqueue them until resumed.
CREATE TABLE pauses (
    kind TEXT NOT NULL CHECK (kind IN ('channel', 'connector')),
    name TEXT NOT NULL,
    paused_at BIGINT NOT NULL,
    paused_by TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (kind, name)
);
-- The queue depth and oldest waiting delivery per channel (`GET /v1/channels`, the console).
CREATE INDEX deliveries_waiting ON deliveries (organization_id, channel, created_at) WHERE status IN ('queued', 'sending');
