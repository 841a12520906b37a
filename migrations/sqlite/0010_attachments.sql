-- Attachments of messages (table created empty in 0001): sealed with the at-rest key, the
-- context `attachment:<message id>:<attachment id>` binding each to its row. `position` keeps
-- the order the sender gave; reads go by organization and message.
ALTER TABLE attachments ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
CREATE INDEX attachments_org_message ON attachments (organization_id, message_id, position);
