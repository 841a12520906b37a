-- GET /v1/messages filters (admin list, keyset newest first) and the dead-letter gauge's count.
CREATE INDEX messages_org_created ON messages (organization_id, created_at, id);
CREATE INDEX messages_patient_created ON messages (patient_id, created_at, id);
CREATE INDEX dead_letters_waiting ON dead_letters (created_at) WHERE requeued_at IS NULL;
