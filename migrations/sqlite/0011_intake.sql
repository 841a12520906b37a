-- One intake pipeline (src/intake): what patient matching decided for an inbound item (the
-- rule that chose its patient, or the candidates each rule proposed), and every step the item
-- went through, in order (received, parsed, matched, filed/unmatched/processed, acknowledged,
-- and a person's resolved/reassigned/dismissed). Details are ids and codes only.
ALTER TABLE inbound_items ADD COLUMN match_method TEXT;
ALTER TABLE inbound_items ADD COLUMN candidates TEXT;     -- JSON [{"patient_id", "method"}]

CREATE TABLE inbound_steps (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id TEXT NOT NULL,
    inbound_item_id TEXT NOT NULL,
    step            TEXT NOT NULL,
    status          TEXT NOT NULL,            -- the item's status after the step
    detail          TEXT,                     -- JSON, ids and codes only
    created_at      BIGINT NOT NULL
);
CREATE INDEX inbound_steps_item ON inbound_steps (inbound_item_id, id);
