-- Webhook endpoints (Standard Webhooks): per organization, a URL on an operator-allowed host,
-- an event-type filter, a sealed signing secret (and, during a rotation's overlap window, the
-- previous one), and the dispatcher's position in the organization's events feed (tx, id):
-- everything after it is yet to be fanned out into webhook_deliveries.
CREATE TABLE webhook_endpoints (
    organization_id TEXT NOT NULL REFERENCES organizations(id),
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    secret BLOB NOT NULL,
    previous_secret BLOB,
    previous_until BIGINT,
    cursor_tx BIGINT NOT NULL,
    cursor_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, id)
);

-- One event to one endpoint: a durable job. `pending` (due at next_attempt_at, claimed by a
-- daemon until leased_until) → `delivered` (a 2xx), or → `dead` once give_up_at has passed;
-- a dead one goes back to `pending` when retried through the API. The webhook-id receivers
-- dedupe by is the row id. `order_key` (the message the event is about, else its subject)
-- keeps one subject's events in feed order: a row is not sent while an earlier one with the
-- same key is pending.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    event_tx BIGINT NOT NULL,
    kind TEXT NOT NULL,
    order_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    leased_until BIGINT,
    give_up_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (organization_id, endpoint_id, event_id),
    FOREIGN KEY (organization_id, endpoint_id) REFERENCES webhook_endpoints(organization_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (organization_id, endpoint_id, order_key, status, event_tx, event_id);
CREATE INDEX webhook_deliveries_list ON webhook_deliveries (organization_id, endpoint_id, status, created_at);
