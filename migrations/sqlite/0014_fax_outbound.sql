-- Fax out (issue 15).
--
-- `fax_records`: one row per fax a provider knows, keyed by (provider, direction, provider id):
-- providers reuse ids across directions (etherFAX), so the id alone names nothing. Outbound rows
-- point at the delivery that sent them and keep the provider's page count and last state;
-- inbound rows (faxin) point at the inbound item.
CREATE TABLE fax_records (
    provider         TEXT NOT NULL,        -- the connector's name
    direction        TEXT NOT NULL,        -- outbound | inbound
    provider_id      TEXT NOT NULL,
    organization_id  TEXT NOT NULL,
    delivery_id      TEXT,
    inbound_item_id  TEXT,
    pages            BIGINT,               -- pages the provider reports (sent or received)
    pages_submitted  BIGINT,               -- pages we sent (cover page included)
    provider_status  TEXT,
    reason           TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (provider, direction, provider_id)
);
CREATE INDEX fax_records_delivery ON fax_records (delivery_id) WHERE delivery_id IS NOT NULL;

-- Documents we serve to providers that fetch them (Telnyx `media_url`): sealed at rest, found
-- by the SHA-256 of a random token that is only in the URL we hand the provider, valid until
-- `expires_at` and for one fetch (`fetched_at` set by the fetch that wins).
CREATE TABLE fax_media (
    token_hash       TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    content_type     TEXT NOT NULL,
    content          BLOB NOT NULL,
    expires_at       BIGINT NOT NULL,
    fetched_at       BIGINT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX fax_media_expiry ON fax_media (expires_at);

-- A fax that failed for a reason worth another try (busy, no answer) is retried as a new
-- delivery of the same message to the same number; it points at the one it retries.
ALTER TABLE deliveries ADD COLUMN retry_of TEXT;
