-- The admin API's lists (GET /v1/deliveries, GET /v1/dead-letters): newest first within an
-- organization, keyset-paged on (created_at, id).
CREATE INDEX deliveries_org_created ON deliveries (organization_id, created_at, id);
CREATE INDEX dead_letters_org_created ON dead_letters (organization_id, created_at, delivery_id);

-- Retention (crate::retention): what the pass selects by time, where ids do not grow with it.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
CREATE INDEX webhook_events_created ON webhook_events (created_at);
CREATE INDEX hl7_messages_retention ON hl7_messages (status, received_at);
CREATE INDEX inbound_items_retention ON inbound_items (status, updated_at);
CREATE INDEX webhook_deliveries_retention ON webhook_deliveries (status, updated_at);
CREATE INDEX fax_inbound_retention ON fax_inbound (status, updated_at);
