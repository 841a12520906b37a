-- Inbound Direct (issue 14). An inbound item keeps what it was received as (`raw`, sealed)
-- and, once security processing accepted it, the message it opened to (`opened`, sealed with
-- associated data `opened:<item id>`): intake parses that, so a stored item is judged once, at
-- receipt. An item that failed a trust check is `quarantined` with the check's name; one whose
-- check could not be made (a CRL that could not be fetched under `crl = "hard"`) also has a
-- `retry_at` and is processed again then.
ALTER TABLE inbound_items ADD COLUMN opened BLOB;
ALTER TABLE inbound_items ADD COLUMN quarantine_check TEXT;
ALTER TABLE inbound_items ADD COLUMN retry_at BIGINT;
CREATE INDEX inbound_items_retry ON inbound_items (retry_at) WHERE retry_at IS NOT NULL;

-- MDNs we owe senders of inbound Direct messages (RFC 8098, Direct delivery-notification
-- guide): queued in the same step that earned them, sent signed and encrypted through the
-- connector's HISP, retried with backoff. One per item and disposition, ever: a release, a
-- reprocess or a crash never sends a second.
CREATE TABLE direct_mdns (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL,
    inbound_item_id     TEXT NOT NULL,
    connector           TEXT NOT NULL,
    disposition         TEXT NOT NULL,        -- processed | dispatched | failed
    recipient           TEXT NOT NULL,        -- the original sender
    original_message_id TEXT NOT NULL,
    final_destination   BOOLEAN NOT NULL DEFAULT FALSE,
    recipient_certs     TEXT,                 -- PEM: the verified signer's certificate(s)
    status              TEXT NOT NULL,        -- queued | sent | failed
    attempts            INTEGER NOT NULL DEFAULT 0,
    not_before          BIGINT NOT NULL,
    message_id          TEXT,                 -- the MDN's own Message-ID once built
    reason              TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE UNIQUE INDEX direct_mdns_once ON direct_mdns (inbound_item_id, disposition);
CREATE INDEX direct_mdns_due ON direct_mdns (not_before) WHERE status = 'queued';
