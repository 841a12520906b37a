-- Inbound faxes (issue 15). A provider's fax webhook, once its signature is verified, is kept
-- here sealed (the fax's details and, when posted, its document) before the provider is
-- answered; the `fax-inbound` job then finishes the work: downloads the document when the
-- provider gave only a temporary URL, binds the fax to the organization owning the number it
-- was sent to (else the operator's orphans), and hands it to the intake pipeline. One row per
-- (provider, direction, provider id): a redelivered fax is recorded once (etherFAX reuses ids
-- across directions, so the direction is part of the key).
CREATE TABLE fax_inbound (
    id              TEXT PRIMARY KEY,
    provider        TEXT NOT NULL,            -- the manifest: telnyx_fax, phaxio
    direction       TEXT NOT NULL,            -- received
    provider_id     TEXT NOT NULL,            -- the provider's fax id
    connector       TEXT NOT NULL,
    raw             BLOB NOT NULL,            -- sealed, the row id as associated data
    status          TEXT NOT NULL,            -- received | filed | orphaned | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    not_before      BIGINT NOT NULL,          -- due time; while an attempt runs, its lease
    reason          TEXT,                     -- why the last attempt failed (no PHI)
    inbound_item_id TEXT,                     -- the intake item (or orphan) it became
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX fax_inbound_once ON fax_inbound (provider, direction, provider_id);
CREATE INDEX fax_inbound_due ON fax_inbound (not_before) WHERE status = 'received';
