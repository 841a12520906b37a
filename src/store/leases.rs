//! Named leases: the fleet's cron work (reminders, expiry, the sweeper) runs where the lease
//! is held, once per tick across daemons.

use super::{Leases, Result, now_ms, on_db};

impl Leases<'_> {
    /// Takes or renews a named lease for `ttl_ms`; `false` when another holder has it.
    pub async fn take(self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "INSERT INTO leases (name, holder, until_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_at = excluded.until_at
             WHERE leases.holder = excluded.holder OR leases.until_at < $4
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(row.is_some())
    }

    /// Who holds a named lease and until when (unix ms), if anyone has taken it.
    pub async fn get(self, name: &str) -> Result<Option<(String, i64)>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT holder, until_at FROM leases WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await)?)
    }

    pub async fn release(self, name: &str, holder: &str) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM leases WHERE name = $1 AND holder = $2"
        )
        .bind(name)
        .bind(holder)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}

/// The latest run of a scheduled job (`scheduled_runs`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduledRunRow {
    pub name: String,
    /// The daemon that ran it (`node:instance`).
    pub holder: String,
    pub started_at: i64,
    pub finished_at: i64,
    /// `ok` or `failed`.
    pub outcome: String,
    /// JSON counts (the job's report).
    pub report: String,
}

impl Leases<'_> {
    /// Records the latest run of the job `run.name` (replacing the one before).
    pub async fn record_run(self, run: &ScheduledRunRow) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "INSERT INTO scheduled_runs (name, holder, started_at, finished_at, outcome, report)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                started_at = excluded.started_at, finished_at = excluded.finished_at,
                outcome = excluded.outcome, report = excluded.report",
        )
        .bind(&run.name)
        .bind(&run.holder)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(&run.outcome)
        .bind(&run.report)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The latest run of the job `name`, if it ever ran.
    pub async fn last_run(self, name: &str) -> Result<Option<ScheduledRunRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT name, holder, started_at, finished_at, outcome, report
             FROM scheduled_runs WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await)?)
    }
}
