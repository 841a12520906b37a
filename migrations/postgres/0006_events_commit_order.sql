-- Identity ids are handed out when a row is inserted, not when its transaction commits, so a
-- follower reading `id > last` can step past an event whose transaction commits later. Each
-- event now records the id of the transaction that wrote it; the feed is read in
-- (tx, id) order and only up to the oldest transaction still running (the snapshot's xmin),
-- below which nothing new can appear. Rows written before this migration keep tx = 0.
ALTER TABLE events ADD COLUMN tx BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN tx SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_org_tx ON events (organization_id, tx, id);
