-- SQLite has one writer, so ids already commit in order: tx stays 0 and the feed's (tx, id)
-- order is the id order. The column exists so both databases share one query.
ALTER TABLE events ADD COLUMN tx BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_org_tx ON events (organization_id, tx, id);
