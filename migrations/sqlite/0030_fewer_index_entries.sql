-- A delivery has a provider reference only once it is sent; the lookups by reference (a
-- provider's status callback) name one, so the index holds only deliveries that have one.
DROP INDEX deliveries_provider_ref;
CREATE INDEX deliveries_provider_ref ON deliveries (connector, provider_ref)
    WHERE provider_ref IS NOT NULL;

-- events_kind_time serves one reader, the urgent notifier, which reads three kinds by time;
-- the other events (most of them) are no longer entered in it. The predicate is the notifier's
-- list as its query spells it (`notify::EVENT_KINDS`, in that order: SQLite matches the terms
-- as written); `store::events::tests` reads the notifier's plan on both databases.
DROP INDEX events_kind_time;
CREATE INDEX events_kind_time ON events (kind, created_at)
    WHERE kind IN ('urgent_message_sent', 'message_read', 'message.read');
