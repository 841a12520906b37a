-- The latest run of each scheduled job (the reminder pass), whichever daemon of the fleet ran
-- it: shown in the console with the next run. Counts only, no PHI.
CREATE TABLE scheduled_runs (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    outcome     TEXT NOT NULL,            -- ok | failed
    report      TEXT NOT NULL             -- JSON counts
);
