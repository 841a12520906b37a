//! Inbound Direct items between receipt and intake (migration 0013): the message security
//! processing opened (`opened`, sealed), the quarantine of items that failed a trust check
//! (`quarantined`, with the check's name and, when the check could not be made, `retry_at`),
//! an operator's release, and the items a restarted daemon must take further.

use super::audit::bind_audit;
use super::inbound::{inbound_columns, insert_step};
use super::{AuditEntry, Direct, InboundRow, Result, StoreError, now_ms, on_db};

/// A quarantine decision.
#[derive(Debug, Clone)]
pub struct Quarantine<'a> {
    pub organization_id: &'a str,
    pub item_id: &'a str,
    /// The failing check (`chain`, `revocation`, `not_encrypted`, …).
    pub check: &'a str,
    /// `check: detail`, for operators (no addresses or content).
    pub reason: &'a str,
    /// When to process it again (the check could not be made), if ever.
    pub retry_at: Option<i64>,
}

impl Direct<'_> {
    /// Stores what security processing opened a `received` item to, with its `verified` step
    /// (detail: signers, cipher; no addresses). `false` when it was opened before (another
    /// pass got there first): the caller goes on with what is stored.
    pub async fn record_opened(
        self,
        organization_id: &str,
        item_id: &str,
        opened: &[u8],
        detail: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let moved = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE inbound_items SET opened = $3, reason = NULL, quarantine_check = NULL,
                    retry_at = NULL, updated_at = $4
                 WHERE organization_id = $1 AND id = $2 AND status = 'received' AND opened IS NULL",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(opened)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved > 0 {
                insert_step!(
                    &mut *tx,
                    organization_id,
                    item_id,
                    "verified",
                    "received",
                    Some(detail),
                    now
                );
            }
            tx.commit().await?;
            moved
        });
        Ok(moved > 0)
    }

    /// Quarantines a `received` (or, processed again, `quarantined`) item with its
    /// `quarantined` step. A `Conflict` when the item is in neither state.
    pub async fn quarantine(self, q: &Quarantine<'_>) -> Result<()> {
        let now = now_ms();
        let detail = serde_json::json!({"check": q.check, "retry_at": q.retry_at}).to_string();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE inbound_items SET status = 'quarantined', reason = $3, quarantine_check = $4,
                    retry_at = $5, opened = NULL, updated_at = $6
                 WHERE organization_id = $1 AND id = $2 AND status IN ('received', 'quarantined')",
            )
            .bind(q.organization_id)
            .bind(q.item_id)
            .bind(q.reason)
            .bind(q.check)
            .bind(q.retry_at)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "inbound item is not waiting for security processing".into(),
                ));
            }
            insert_step!(
                &mut *tx,
                q.organization_id,
                q.item_id,
                "quarantined",
                "quarantined",
                Some(&detail),
                now
            );
            tx.commit().await?;
        });
        Ok(())
    }

    /// Puts a quarantined item back to `received` for security processing to run again (an
    /// operator's release, audited in the same transaction; or a scheduled retry, `audit`
    /// `None`). A `Conflict` when it is not quarantined.
    pub async fn release(
        self,
        organization_id: &str,
        item_id: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let now = now_ms();
        let step = if audit.is_some() { "released" } else { "retry" };
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE inbound_items SET status = 'received', reason = NULL, quarantine_check = NULL,
                    retry_at = NULL, updated_at = $3
                 WHERE organization_id = $1 AND id = $2 AND status = 'quarantined'",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "inbound item is not quarantined".into(),
                ));
            }
            insert_step!(
                &mut *tx,
                organization_id,
                item_id,
                step,
                "received",
                None::<&str>,
                now
            );
            if let Some(audit) = audit {
                bind_audit!(audit, now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Quarantined Direct items, newest first: of one organization, or (the operator's CLI)
    /// of all.
    pub async fn quarantined(
        self,
        organization_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboundRow>> {
        let sql = concat!(
            "SELECT ",
            inbound_columns!(),
            " FROM inbound_items WHERE channel = 'direct' AND status = 'quarantined'
              AND (CAST($1 AS TEXT) IS NULL OR organization_id = $1)
              ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Direct items a pass must take further: `received` and untouched since `stale_before`
    /// (the daemon stopped half-way), or quarantined with a retry due by `now`. Oldest first.
    pub async fn items_to_resume(
        self,
        stale_before: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<InboundRow>> {
        let sql = concat!(
            "SELECT ",
            inbound_columns!(),
            " FROM inbound_items WHERE channel = 'direct'
              AND ((status = 'received' AND updated_at < $1)
                   OR (status = 'quarantined' AND retry_at IS NOT NULL AND retry_at <= $2))
              ORDER BY updated_at, id LIMIT $3"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(stale_before)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }
}
