//! Alert state per rule and subject (`alert_states`): transitions and the claim of a notice.
//! A claim is one conditional `UPDATE`, so two daemons never announce the same change twice.

use super::{Alerts, Result, on_db};

/// One rule's state for one subject.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AlertStateRow {
    pub rule: String,
    pub subject: String,
    pub firing: bool,
    /// When it last started or stopped firing, ms.
    pub changed_at: i64,
    pub detail: Option<String>,
    /// The current state was announced (or needs no notice).
    pub notified: bool,
    /// A firing notice went out for the current (or last) episode.
    pub firing_notified: bool,
    pub last_notice_at: Option<i64>,
}

impl Alerts<'_> {
    /// Every rule's state.
    pub async fn all(self) -> Result<Vec<AlertStateRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT rule, subject, firing, changed_at, detail, notified, firing_notified, last_notice_at
             FROM alert_states ORDER BY rule, subject",
        )
        .fetch_all(pool)
        .await
        })?)
    }

    /// Records that `subject` of `rule` started (`firing`) or stopped firing at `now`; a
    /// state already recorded is left as it is (its time included). Returns whether it changed.
    pub async fn transition(
        self,
        rule: &str,
        subject: &str,
        firing: bool,
        detail: &str,
        now: i64,
    ) -> Result<bool> {
        let changed = on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO alert_states (rule, subject, firing, changed_at, detail, notified, firing_notified)
             VALUES ($1, $2, $3, $4, $5, FALSE, FALSE)
             ON CONFLICT (rule, subject) DO UPDATE SET firing = excluded.firing,
                changed_at = excluded.changed_at, detail = excluded.detail, notified = FALSE
             WHERE alert_states.firing <> excluded.firing",
        )
        .bind(rule)
        .bind(subject)
        .bind(firing)
        .bind(now)
        .bind(detail)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Claims the notice of the current state (`firing` or resolved) of `subject`: true for
    /// the one caller that may send it, when no notice went out in the last `min_interval_ms`.
    pub async fn claim_notice(
        self,
        rule: &str,
        subject: &str,
        firing: bool,
        now: i64,
        min_interval_ms: i64,
    ) -> Result<bool> {
        let claimed = on_db!(self.db(), |pool| sqlx::query(
            "UPDATE alert_states SET notified = TRUE, firing_notified = $3, last_notice_at = $4
             WHERE rule = $1 AND subject = $2 AND firing = $3 AND NOT notified
               AND (last_notice_at IS NULL OR last_notice_at <= $5)",
        )
        .bind(rule)
        .bind(subject)
        .bind(firing)
        .bind(now)
        .bind(now.saturating_sub(min_interval_ms))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(claimed == 1)
    }

    /// A resolve whose firing was never announced: settled without a notice.
    pub async fn settle_quietly(self, rule: &str, subject: &str) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE alert_states SET notified = TRUE
             WHERE rule = $1 AND subject = $2 AND NOT firing AND NOT notified AND NOT firing_notified",
        )
        .bind(rule)
        .bind(subject)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// A claimed notice that could not be sent: claimable again at the next evaluation.
    pub async fn unclaim(self, rule: &str, subject: &str, firing: bool) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE alert_states SET notified = FALSE, firing_notified = $4, last_notice_at = NULL
             WHERE rule = $1 AND subject = $2 AND firing = $3 AND notified",
        )
        .bind(rule)
        .bind(subject)
        .bind(firing)
        .bind(!firing)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
