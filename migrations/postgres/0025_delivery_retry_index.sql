-- A failed delivery is retried by at most one new delivery (a transient fax failure queues
-- its retry in the transaction that records the failure); the index also finds it.
CREATE UNIQUE INDEX deliveries_retry_of ON deliveries (retry_of) WHERE retry_of IS NOT NULL;
