-- The admin API's lists (GET /v1/deliveries, GET /v1/dead-letters): newest first within an
-- organization, keyset-paged on (created_at, id).
CREATE INDEX deliveries_org_created ON deliveries (organization_id, created_at, id);
CREATE INDEX dead_letters_org_created ON dead_letters (organization_id, created_at, delivery_id);
