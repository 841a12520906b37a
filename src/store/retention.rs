//! Retention: deleting (or emptying) rows that grow with traffic once they are older than the
//! configured age, one bounded batch per statement so no writer waits behind a long delete.
//! Each statement reads at most a batch: tables whose ids grow with time are read oldest id
//! first, the others through an index on their time (migration 0017).
//! What may be pruned, and what must stay, is decided here per kind; the schedule, the lease
//! and the ages are `crate::retention`'s.

use super::{Result, Retention, on_db};

/// A kind of record the maintenance pass prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prunable {
    /// `events` every webhook endpoint has passed and no pending webhook delivery names.
    Events,
    /// `delivery_events` (status history).
    DeliveryEvents,
    /// `idempotency_keys`.
    IdempotencyKeys,
    /// `hl7_messages` that were applied.
    Hl7Archive,
    /// The sealed raw (and opened) bytes of inbound items filed, resolved or dismissed, and
    /// the webhook bodies of received faxes filed or orphaned, emptied in place; rows stay.
    InboundRaw,
    /// Operator-only orphans (the whole row: it holds nothing but the raw item).
    Orphans,
    /// Provider webhook event ids (replay refusal) and delivered webhook deliveries.
    WebhookRecords,
    /// The job queue's finished jobs.
    Jobs,
    /// `audit_events` (only when configured, never under six years).
    Audit,
}

impl Prunable {
    pub const ALL: [Prunable; 9] = [
        Prunable::Events,
        Prunable::DeliveryEvents,
        Prunable::IdempotencyKeys,
        Prunable::Hl7Archive,
        Prunable::InboundRaw,
        Prunable::Orphans,
        Prunable::WebhookRecords,
        Prunable::Jobs,
        Prunable::Audit,
    ];

    /// The name in logs, the CLI and the bench.
    pub fn as_str(self) -> &'static str {
        match self {
            Prunable::Events => "events",
            Prunable::DeliveryEvents => "delivery_events",
            Prunable::IdempotencyKeys => "idempotency_keys",
            Prunable::Hl7Archive => "hl7_archive",
            Prunable::InboundRaw => "inbound_raw",
            Prunable::Orphans => "inbound_orphans",
            Prunable::WebhookRecords => "webhook_records",
            Prunable::Jobs => "jobs",
            Prunable::Audit => "audit",
        }
    }
}

impl Retention<'_> {
    /// Prunes at most `batch` rows of `kind` created before `cutoff_ms` (unix ms), in one
    /// short statement (two for webhook records). Returns how many rows went; fewer than
    /// `batch` means the kind is done for now.
    pub async fn prune_batch(self, kind: Prunable, cutoff_ms: i64, batch: u32) -> Result<u64> {
        let batch = i64::from(batch);
        let removed = match kind {
            Prunable::Events => {
                let Some((floor_tx, floor_id)) = self.events_floor().await? else {
                    return Ok(0);
                };
                on_db!(self.db(), |pool| sqlx::query(
                    "DELETE FROM events WHERE id IN (
                        SELECT id FROM (SELECT id, tx, created_at FROM events ORDER BY id LIMIT $4)
                            AS oldest
                         WHERE created_at < $1 AND (tx < $2 OR (tx = $2 AND id <= $3))
                           AND id < COALESCE((SELECT MIN(event_id) FROM webhook_deliveries
                                               WHERE status = 'pending'), $3 + 1))",
                )
                .bind(cutoff_ms)
                .bind(floor_tx)
                .bind(floor_id)
                .bind(batch)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?
            }
            Prunable::DeliveryEvents => {
                self.delete("delivery_events", "id", "created_at", cutoff_ms, batch)
                    .await?
            }
            Prunable::IdempotencyKeys => on_db!(self.db(), |pool| sqlx::query(
                "DELETE FROM idempotency_keys WHERE (organization_id, key) IN (
                    SELECT organization_id, key FROM idempotency_keys
                     WHERE created_at < $1 LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(batch)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?,
            Prunable::Hl7Archive => on_db!(self.db(), |pool| sqlx::query(
                "DELETE FROM hl7_messages WHERE id IN (
                    SELECT id FROM hl7_messages
                     WHERE status = 'applied' AND received_at < $1 LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(batch)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?,
            Prunable::InboundRaw => {
                let items = on_db!(self.db(), |pool| sqlx::query(
                    "UPDATE inbound_items SET raw = $3, opened = NULL WHERE id IN (
                        SELECT id FROM inbound_items
                         WHERE status IN ('filed', 'resolved', 'dismissed') AND updated_at < $1
                           AND (LENGTH(raw) > 0 OR opened IS NOT NULL)
                         LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(batch)
                .bind(Vec::<u8>::new())
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
                // A received fax's webhook body, once its document is an inbound item or an
                // orphan (the row stays: a redelivery is still recognised).
                let faxes = on_db!(self.db(), |pool| sqlx::query(
                    "UPDATE fax_inbound SET raw = $3 WHERE id IN (
                        SELECT id FROM fax_inbound
                         WHERE status IN ('filed', 'orphaned') AND updated_at < $1
                           AND LENGTH(raw) > 0
                         LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(batch)
                .bind(Vec::<u8>::new())
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
                items + faxes
            }
            Prunable::Orphans => {
                self.delete("inbound_orphans", "id", "created_at", cutoff_ms, batch)
                    .await?
            }
            Prunable::WebhookRecords => {
                let replays = on_db!(self.db(), |pool| sqlx::query(
                    "DELETE FROM webhook_events WHERE (connector, event_id) IN (
                        SELECT connector, event_id FROM webhook_events
                         WHERE created_at < $1 LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(batch)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
                let delivered = on_db!(self.db(), |pool| sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE id IN (
                        SELECT id FROM webhook_deliveries
                         WHERE status = 'delivered' AND updated_at < $1 LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(batch)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
                replays + delivered
            }
            Prunable::Jobs => self.db().prune_finished_jobs(cutoff_ms, batch).await?,
            Prunable::Audit => {
                self.delete("audit_events", "id", "created_at", cutoff_ms, batch)
                    .await?
            }
        };
        Ok(removed)
    }

    /// `DELETE` of those of the `batch` first rows of `table` by its key `key` (ids that grow
    /// with time: autoincrement or ULIDs) older than `cutoff_ms` by `time`: the work per batch
    /// is bounded however large the table, and a pass over a table with nothing old reads one
    /// batch. Only this module's own table and column names are ever passed.
    async fn delete(
        self,
        table: &'static str,
        key: &'static str,
        time: &'static str,
        cutoff_ms: i64,
        batch: i64,
    ) -> Result<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN (
                SELECT {key} FROM (SELECT {key}, {time} FROM {table} ORDER BY {key} LIMIT $2)
                    AS oldest
                 WHERE {time} < $1)"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query(sqlx::AssertSqlSafe(
            sql.clone()
        ))
        .bind(cutoff_ms)
        .bind(batch)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?)
    }

    /// The oldest feed position some webhook endpoint has not passed, as `(tx, id)`: events
    /// at or below it are behind every endpoint. With no endpoint, the whole feed qualifies.
    /// `None` when an endpoint has not passed anything yet.
    async fn events_floor(self) -> Result<Option<(i64, i64)>> {
        let cursors: Vec<(i64, i64)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT cursor_tx, cursor_id FROM webhook_endpoints"
        )
        .fetch_all(pool)
        .await)?;
        Ok(match cursors.into_iter().min() {
            None => Some((i64::MAX, i64::MAX - 1)),
            Some((tx, id)) if tx >= 0 && id >= 0 => Some((tx, id)),
            Some(_) => None,
        })
    }
}
