-- SMS through provider connectors: phone numbers in E.164 for matching inbound senders,
-- provider ids on inbound items (webhook redelivery is recorded once), consent lookups by
-- number (opt-out keywords record the number, not only the patient).
ALTER TABLE contact_points ADD COLUMN e164 TEXT;
CREATE INDEX contact_points_e164 ON contact_points (organization_id, e164);

ALTER TABLE inbound_items ADD COLUMN connector TEXT;
ALTER TABLE inbound_items ADD COLUMN provider_ref TEXT;
CREATE UNIQUE INDEX inbound_items_provider_ref
    ON inbound_items (organization_id, channel, provider_ref) WHERE provider_ref IS NOT NULL;

CREATE INDEX consents_recipient ON consents (organization_id, channel, recipient, recorded_at);

-- Reconciliation: when a delivery stuck in `sent` was last looked up at its provider.
ALTER TABLE deliveries ADD COLUMN reconciled_at BIGINT;
CREATE INDEX deliveries_sent ON deliveries (connector, updated_at) WHERE status = 'sent';
