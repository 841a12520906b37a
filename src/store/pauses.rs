//! Paused channels and connectors (fleet-wide: the table is the truth, every daemon reads
//! it), the deliveries a pause holds back, and the figures `GET /v1/channels` shows.
//!
//! Workers consult [`Pauses::current`] before each claim: a read cached for at most
//! [`PAUSE_TTL`], so a pause made on another daemon of the fleet takes effect there within
//! that time (and at once on the daemon that made it, whose cache the change clears).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audit::bind_audit;
use super::{AuditEntry, Pauses, Result, SweepItem, now_ms, on_db};

/// How long a daemon trusts its copy of the pause table.
pub const PAUSE_TTL: Duration = Duration::from_secs(1);

/// One pause.
#[derive(Debug, Clone, sqlx::FromRow, PartialEq, Eq)]
pub struct PauseRow {
    /// `channel` or `connector`.
    pub kind: String,
    pub name: String,
    /// Unix ms.
    pub paused_at: i64,
    /// Who paused it (`key:<id>`, `cli`, `console:<key id>`).
    pub paused_by: String,
    pub reason: Option<String>,
}

/// The pause table as last read, shared by the clones of a store.
#[derive(Debug, Default)]
pub struct PauseCache {
    read: std::sync::Mutex<Option<(Instant, Arc<Vec<PauseRow>>)>>,
}

impl PauseCache {
    fn fresh(&self) -> Option<Arc<Vec<PauseRow>>> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.as_ref()
            .filter(|(at, _)| at.elapsed() < PAUSE_TTL)
            .map(|(_, rows)| rows.clone())
    }

    fn set(&self, rows: Option<Arc<Vec<PauseRow>>>) {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) =
            rows.map(|rows| (Instant::now(), rows));
    }
}

/// Per channel of one organization: deliveries by status created in the last hour and day,
/// the last success and failure (unix ms), and what is waiting.
#[derive(Debug, Clone, Default)]
pub struct ChannelFigures {
    /// (status, last hour, last day).
    pub by_status: Vec<(String, i64, i64)>,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    /// The reason of the latest failure of the day.
    pub last_failure: Option<String>,
    /// Queued or sending.
    pub waiting: i64,
    /// Created-at of the oldest waiting delivery (unix ms).
    pub oldest_waiting_at: Option<i64>,
    /// Deliveries that reached a success status in the last [`RECENT_MS`].
    pub recent_successes: i64,
}

/// The window of [`ChannelFigures::recent_successes`]: five minutes.
pub const RECENT_MS: i64 = 5 * 60 * 1000;

impl Pauses<'_> {
    /// The pause table, from the database.
    pub async fn all(self) -> Result<Vec<PauseRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT kind, name, paused_at, paused_by, reason FROM pauses ORDER BY kind, name"
        )
        .fetch_all(pool)
        .await)?)
    }

    /// The pause table, read at most [`PAUSE_TTL`] ago.
    pub async fn current(self) -> Result<Arc<Vec<PauseRow>>> {
        if let Some(rows) = self.store.pause_cache.fresh() {
            return Ok(rows);
        }
        let rows = Arc::new(self.all().await?);
        self.store.pause_cache.set(Some(rows.clone()));
        Ok(rows)
    }

    /// Pauses `kind`/`name` with the audit row in the same transaction; false when it was
    /// paused already (the first pause, its time and author, stand).
    pub async fn pause(
        self,
        kind: &str,
        name: &str,
        by: &str,
        reason: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let now = now_ms();
        let inserted = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO pauses (kind, name, paused_at, paused_by, reason) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kind, name) DO NOTHING",
            )
            .bind(kind)
            .bind(name)
            .bind(now)
            .bind(by)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            bind_audit!(audit, now).execute(&mut *tx).await?;
            tx.commit().await?;
            inserted == 1
        });
        self.store.pause_cache.set(None);
        Ok(inserted)
    }

    /// Resumes `kind`/`name` (audited in the same transaction); false when it was not paused.
    pub async fn resume(self, kind: &str, name: &str, audit: &AuditEntry) -> Result<bool> {
        let now = now_ms();
        let deleted = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM pauses WHERE kind = $1 AND name = $2")
                .bind(kind)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            bind_audit!(audit, now).execute(&mut *tx).await?;
            tx.commit().await?;
            deleted == 1
        });
        self.store.pause_cache.set(None);
        Ok(deleted)
    }

    /// The channel of a delivery (a worker holding a job while something is paused).
    pub async fn channel_of(self, delivery_id: &str) -> Result<Option<String>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT channel FROM deliveries WHERE id = $1"
        )
        .bind(delivery_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// A job for a held delivery was dropped: no job is pending for it any more (the sweeper,
    /// which skips paused channels, or a resume enqueues it again). Its attempts and status
    /// are untouched.
    pub async fn release(self, delivery_id: &str) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "UPDATE deliveries SET enqueued_at = NULL WHERE id = $1 AND status IN ('queued', 'sending')"
        )
        .bind(delivery_id)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// Deliveries of `channel` waiting with no job pushed (held by a pause), after the id
    /// `after`, in id order: what a resume enqueues.
    pub async fn held(self, channel: &str, after: &str, limit: i64) -> Result<Vec<SweepItem>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id, channel FROM deliveries
             WHERE status IN ('queued', 'sending') AND channel = $1 AND enqueued_at IS NULL AND id > $2
             ORDER BY id LIMIT $3",
        )
        .bind(channel)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
        })?)
    }

    /// The figures of one organization's `channel` (see [`ChannelFigures`]).
    pub async fn figures(self, organization_id: &str, channel: &str) -> Result<ChannelFigures> {
        let now = now_ms();
        let (hour, day) = (now - 3_600_000, now - 86_400_000);
        let by_status: Vec<(String, i64, i64)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT status, SUM(CASE WHEN created_at >= $3 THEN 1 ELSE 0 END), COUNT(*)
             FROM deliveries WHERE organization_id = $1 AND channel = $2 AND created_at >= $4
             GROUP BY status ORDER BY status",
        )
        .bind(organization_id)
        .bind(channel)
        .bind(hour)
        .bind(day)
        .fetch_all(pool)
        .await)?;
        let (last_success_at, last_failure_at, recent_successes): (
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = on_db!(self.db(), |pool| {
            sqlx::query_as(
                "SELECT MAX(CASE WHEN status IN ('sent', 'delivered', 'dispatched', 'processed') THEN updated_at END),
                        MAX(CASE WHEN status = 'failed' THEN updated_at END),
                        SUM(CASE WHEN status IN ('sent', 'delivered', 'dispatched', 'processed')
                                  AND updated_at >= $4 THEN 1 ELSE 0 END)
                 FROM deliveries WHERE organization_id = $1 AND channel = $2 AND created_at >= $3",
            )
            .bind(organization_id)
            .bind(channel)
            .bind(day)
            .bind(now - RECENT_MS)
            .fetch_one(pool)
            .await
        })?;
        let last_failure: Option<Option<String>> = match last_failure_at {
            None => None,
            Some(at) => on_db!(self.db(), |pool| sqlx::query_scalar(
                "SELECT reason FROM deliveries WHERE organization_id = $1 AND channel = $2
                   AND created_at >= $3 AND status = 'failed' AND updated_at = $4 LIMIT 1",
            )
            .bind(organization_id)
            .bind(channel)
            .bind(day)
            .bind(at)
            .fetch_optional(pool)
            .await)?,
        };
        let (waiting, oldest_waiting_at): (i64, Option<i64>) = on_db!(self.db(), |pool| {
            sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM deliveries
                 WHERE organization_id = $1 AND channel = $2 AND status IN ('queued', 'sending')",
            )
            .bind(organization_id)
            .bind(channel)
            .fetch_one(pool)
            .await
        })?;
        Ok(ChannelFigures {
            by_status,
            last_success_at,
            last_failure_at,
            last_failure: last_failure.flatten(),
            waiting,
            oldest_waiting_at,
            recent_successes: recent_successes.unwrap_or(0),
        })
    }
}
