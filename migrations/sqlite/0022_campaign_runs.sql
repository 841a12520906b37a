-- Campaigns over the API and on a schedule (issue 19): the kind (recall campaign or bulk
-- notice), the state an operator sets (active, paused, cancelled), and the scheduled run: the
-- next instant a run is due (NULL: not scheduled, runs only when asked) and the last pass that
-- sent for it (the throttle's budget is counted from it).
ALTER TABLE campaigns ADD COLUMN kind TEXT NOT NULL DEFAULT 'recall';     -- recall | notice
ALTER TABLE campaigns ADD COLUMN state TEXT NOT NULL DEFAULT 'active';    -- active | paused | cancelled
ALTER TABLE campaigns ADD COLUMN next_run_at BIGINT;
ALTER TABLE campaigns ADD COLUMN last_pass_at BIGINT;
ALTER TABLE campaigns ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX campaigns_due ON campaigns (state, next_run_at);
CREATE INDEX campaigns_org ON campaigns (organization_id, created_at);
-- A notice's targets are patients: campaign_targets.recall_id holds the patient id for them.
