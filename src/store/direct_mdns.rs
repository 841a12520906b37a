//! The MDNs we owe senders of inbound Direct messages (`direct_mdns`): queued once per inbound
//! item and disposition (the unique index `direct_mdns_once` makes a second enqueue a no-op),
//! claimed for one attempt by a conditional update, then `sent`, retried or `failed`. The
//! states and the backoff are `crate::direct::mdn`'s; this file only stores them.
//!
//! `attempts` is an `INTEGER` column (a 32-bit integer on PostgreSQL), read as `i32`.

use super::{Direct, Result, StoreError, now_ms, on_db};

/// A row of `direct_mdns`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MdnRow {
    pub id: String,
    pub organization_id: String,
    pub inbound_item_id: String,
    pub connector: String,
    /// `processed` | `dispatched` | `failed`.
    pub disposition: String,
    /// The original sender: where the MDN goes.
    pub recipient: String,
    pub original_message_id: String,
    pub final_destination: bool,
    /// PEM: the certificates to encrypt to (the message's verified signers); none: discovery.
    pub recipient_certs: Option<String>,
    /// `queued` | `sent` | `failed`.
    pub status: String,
    pub attempts: i32,
    /// Due time; while an attempt runs, the end of its lease.
    pub not_before: i64,
    /// The MDN's own Message-ID (without brackets), chosen when it was queued.
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! mdn_columns {
    () => {
        "id, organization_id, inbound_item_id, connector, disposition, recipient, \
         original_message_id, final_destination, recipient_certs, status, attempts, not_before, \
         message_id, reason, created_at, updated_at"
    };
}

/// An MDN to queue.
#[derive(Debug, Clone)]
pub struct NewMdnRow<'a> {
    pub id: &'a str,
    pub organization_id: &'a str,
    pub inbound_item_id: &'a str,
    pub connector: &'a str,
    pub disposition: &'a str,
    pub recipient: &'a str,
    pub original_message_id: &'a str,
    pub final_destination: bool,
    pub recipient_certs: Option<&'a str>,
    pub message_id: &'a str,
}

impl Direct<'_> {
    /// Queues an MDN, due now, for an inbound item of `organization_id`. `Ok(false)` when the
    /// item already has one of this disposition (nothing changes); `NotFound` when the item is
    /// not the organization's.
    pub async fn insert_mdn(self, mdn: &NewMdnRow<'_>) -> Result<bool> {
        let now = now_ms();
        let inserted = on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO direct_mdns (id, organization_id, inbound_item_id, connector, disposition,
                recipient, original_message_id, final_destination, recipient_certs, status,
                attempts, not_before, message_id, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', 0, $10, $11, $10, $10
             WHERE EXISTS (SELECT 1 FROM inbound_items WHERE id = $3 AND organization_id = $2)
             ON CONFLICT (inbound_item_id, disposition) DO NOTHING"
        )
        .bind(mdn.id)
        .bind(mdn.organization_id)
        .bind(mdn.inbound_item_id)
        .bind(mdn.connector)
        .bind(mdn.disposition)
        .bind(mdn.recipient)
        .bind(mdn.original_message_id)
        .bind(mdn.final_destination)
        .bind(mdn.recipient_certs)
        .bind(now)
        .bind(mdn.message_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        if inserted > 0 {
            return Ok(true);
        }
        // Nothing inserted: a duplicate, or an item that is not the organization's.
        let exists: Option<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT id FROM inbound_items WHERE id = $1 AND organization_id = $2"
        )
        .bind(mdn.inbound_item_id)
        .bind(mdn.organization_id)
        .fetch_optional(pool)
        .await)?;
        match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound),
        }
    }

    /// The MDNs of an inbound item of `organization_id`, oldest first.
    pub async fn mdns_of_item(
        self,
        organization_id: &str,
        inbound_item_id: &str,
    ) -> Result<Vec<MdnRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "SELECT ",
            mdn_columns!(),
            " FROM direct_mdns WHERE organization_id = $1 AND inbound_item_id = $2
             ORDER BY created_at, id"
        ))
        .bind(organization_id)
        .bind(inbound_item_id)
        .fetch_all(pool)
        .await)?)
    }

    /// Takes the oldest due MDN of `connector` for one attempt: it stays `queued` with
    /// `not_before = lease_until`, so no other sender (this daemon's or another's on the same
    /// database) takes it until the attempt's outcome is written or the lease runs out.
    /// `None`: nothing due (or another sender took the one this saw first).
    pub async fn claim_mdn(
        self,
        connector: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<MdnRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(concat!(
            "UPDATE direct_mdns SET not_before = $3
             WHERE id = (SELECT id FROM direct_mdns
                          WHERE connector = $1 AND status = 'queued' AND not_before <= $2
                          ORDER BY not_before, id LIMIT 1)
               AND status = 'queued' AND not_before <= $2
             RETURNING ",
            mdn_columns!()
        ))
        .bind(connector)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(pool)
        .await)?)
    }

    /// When the next queued MDN of `connector` falls due (unix ms), if any.
    pub async fn next_mdn_due(self, connector: &str) -> Result<Option<i64>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT MIN(not_before) FROM direct_mdns WHERE connector = $1 AND status = 'queued'"
        )
        .bind(connector)
        .fetch_one(pool)
        .await)?)
    }

    /// The HISP accepted the MDN: `sent`.
    pub async fn mdn_sent(self, id: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE direct_mdns SET status = 'sent', attempts = attempts + 1, reason = NULL,
                not_before = $2, updated_at = $2
             WHERE id = $1 AND status = 'queued'"
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// An attempt failed: queued again for `not_before` with the reason, or `failed` for good
    /// when `permanent` or when this was attempt `max_attempts`. Returns the status now.
    pub async fn mdn_attempt_failed(
        self,
        id: &str,
        reason: &str,
        permanent: bool,
        not_before: i64,
        max_attempts: i32,
    ) -> Result<String> {
        let now = now_ms();
        let status: Option<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE direct_mdns SET attempts = attempts + 1, reason = $2, not_before = $3,
                updated_at = $4,
                status = CASE WHEN $5 OR attempts + 1 >= $6 THEN 'failed' ELSE 'queued' END
             WHERE id = $1 AND status = 'queued' RETURNING status"
        )
        .bind(id)
        .bind(reason)
        .bind(not_before)
        .bind(now)
        .bind(permanent)
        .bind(max_attempts)
        .fetch_optional(pool)
        .await)?;
        status.ok_or(StoreError::NotFound)
    }
}
