-- Alert rules' state per rule and subject: whether it fires, since when, and whether that
-- state was announced (so a restart, or another daemon taking the `alerts` lease, neither
-- re-sends a notice nor misses one). `firing_notified`: a firing notice went out for the
-- current episode (a resolve is announced only then). No PHI: subjects are channel,
-- connector and certificate names.
CREATE TABLE alert_states (
    rule            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    firing          BOOLEAN NOT NULL,
    changed_at      BIGINT NOT NULL,
    detail          TEXT,
    notified        BOOLEAN NOT NULL DEFAULT FALSE,
    firing_notified BOOLEAN NOT NULL DEFAULT FALSE,
    last_notice_at  BIGINT,
    PRIMARY KEY (rule, subject)
);
