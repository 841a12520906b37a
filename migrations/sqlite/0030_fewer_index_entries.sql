-- A delivery has a provider reference only once it is sent; the lookups by reference (a
-- provider's status callback) name one, so the index holds only deliveries that have one.
DROP INDEX deliveries_provider_ref;
CREATE INDEX deliveries_provider_ref ON deliveries (connector, provider_ref)
    WHERE provider_ref IS NOT NULL;
