-- Fewer index entries and trigger calls per accepted message (every row written pays for each
-- index it is entered in, and a delivery is entered again in most of them at each status
-- change, which PostgreSQL cannot make a heap-only update).
--
-- 1. events_org (organization_id, id) is not read on PostgreSQL: the feed reads events_org_tx
--    in commit order, its head is the transaction horizon, and one event is found by its
--    primary key. (SQLite keeps it: there the head is the organization's newest id.)
DROP INDEX events_org;

-- 2. A delivery has a provider reference only once it is sent; the lookups by reference (a
--    provider's status callback) name one, so the index holds only deliveries that have one.
DROP INDEX deliveries_provider_ref;
CREATE INDEX deliveries_provider_ref ON deliveries (connector, provider_ref)
    WHERE provider_ref IS NOT NULL;

-- 3. The wake-up for followers of the events table: once per statement (one NOTIFY per
--    organization among its rows) instead of a PL/pgSQL call per row. PostgreSQL still folds
--    the identical notifications of one transaction into one.
DROP TRIGGER events_notify ON events;
DROP FUNCTION switchboard_notify_event();
CREATE FUNCTION switchboard_notify_events() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('switchboard_events', o)
       FROM (SELECT DISTINCT organization_id AS o FROM inserted) AS organizations;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_notify AFTER INSERT ON events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION switchboard_notify_events();

-- events_kind_time serves one reader, the urgent notifier, which reads three kinds by time;
-- the other events (most of them) are no longer entered in it. The predicate is the notifier's
-- list as its query spells it (`notify::EVENT_KINDS`, in that order: SQLite matches the terms
-- as written); `store::events::tests` reads the notifier's plan on both databases.
DROP INDEX events_kind_time;
CREATE INDEX events_kind_time ON events (kind, created_at)
    WHERE kind IN ('urgent_message_sent', 'message_read', 'message.read');
