//! Faxes: the provider's record of each fax keyed by (provider, direction, provider id), the
//! documents we serve to providers that fetch them (sealed, once per token, until they
//! expire), and the retry of a fax whose line was busy (a new delivery of the same message:
//! deliveries never move backwards). The sealing, tokens and policy are `crate::fax`'s.

use super::{Result, Store, new_id, now_ms, on_db};

/// One fax as its provider knows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct FaxRecordRow {
    pub provider: String,
    pub direction: String,
    pub provider_id: String,
    pub organization_id: String,
    pub delivery_id: Option<String>,
    pub inbound_item_id: Option<String>,
    pub pages: Option<i64>,
    pub pages_submitted: Option<i64>,
    pub provider_status: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A served document, taken by its one fetch.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FaxMediaRow {
    pub organization_id: String,
    pub delivery_id: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

impl Store {
    /// Records an outbound fax the provider accepted (a repeat is a no-op).
    pub async fn record_fax_sent(
        &self,
        provider: &str,
        provider_id: &str,
        organization_id: &str,
        delivery_id: &str,
        pages_submitted: u32,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO fax_records (provider, direction, provider_id, organization_id, delivery_id,
                pages_submitted, provider_status, created_at, updated_at)
             VALUES ($1, 'outbound', $2, $3, $4, $5, 'submitted', $6, $6)
             ON CONFLICT (provider, direction, provider_id) DO NOTHING",
        )
        .bind(provider)
        .bind(provider_id)
        .bind(organization_id)
        .bind(delivery_id)
        .bind(i64::from(pages_submitted))
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// Notes what the provider reports on an outbound fax of delivery `delivery_id`: its state,
    /// pages (kept when a report has none) and failure reason. Creates the record when the
    /// report beat our own `sent` record.
    #[allow(clippy::too_many_arguments)]
    pub async fn note_fax_report(
        &self,
        provider: &str,
        provider_id: &str,
        organization_id: &str,
        delivery_id: &str,
        provider_status: &str,
        pages: Option<u32>,
        reason: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO fax_records (provider, direction, provider_id, organization_id, delivery_id,
                pages, provider_status, reason, created_at, updated_at)
             VALUES ($1, 'outbound', $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (provider, direction, provider_id) DO UPDATE SET
                pages = COALESCE(excluded.pages, fax_records.pages),
                provider_status = excluded.provider_status,
                reason = COALESCE(excluded.reason, fax_records.reason),
                updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(provider_id)
        .bind(organization_id)
        .bind(delivery_id)
        .bind(pages.map(i64::from))
        .bind(provider_status)
        .bind(reason)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// The outbound fax records of a delivery (one per provider id; usually one).
    pub async fn fax_records_of_delivery(&self, delivery_id: &str) -> Result<Vec<FaxRecordRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT provider, direction, provider_id, organization_id, delivery_id, inbound_item_id,
                    pages, pages_submitted, provider_status, reason, created_at, updated_at
             FROM fax_records WHERE delivery_id = $1 ORDER BY created_at",
        )
        .bind(delivery_id)
        .fetch_all(pool)
        .await
        })?)
    }

    /// Stores a sealed document to serve under the token whose hash is `token_hash`; expired
    /// documents are deleted on the way.
    pub async fn insert_fax_media(
        &self,
        token_hash: &str,
        organization_id: &str,
        delivery_id: &str,
        content_type: &str,
        sealed: &[u8],
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM fax_media WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO fax_media (token_hash, organization_id, delivery_id, content_type, content,
                    expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(token_hash)
            .bind(organization_id)
            .bind(delivery_id)
            .bind(content_type)
            .bind(sealed)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes the document for one fetch: `None` when the token is unknown, expired or was
    /// fetched before (the first fetch wins; the row is marked in the same statement).
    pub async fn take_fax_media(&self, token_hash: &str, now: i64) -> Result<Option<FaxMediaRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "UPDATE fax_media SET fetched_at = $2
             WHERE token_hash = $1 AND fetched_at IS NULL AND expires_at > $2
             RETURNING organization_id, delivery_id, content_type, content",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    /// A new delivery that retries failed delivery `failed_id` (same message, recipient and
    /// channel) from `retry_at`, counting the attempts already made; the sweeper gives it a
    /// job once it is due. At most one retry per failed delivery: a repeat returns the one
    /// made before. `None` when `failed_id` is unknown.
    pub async fn retry_failed_delivery(
        &self,
        failed_id: &str,
        retry_at: i64,
        reason: &str,
    ) -> Result<Option<String>> {
        let now = now_ms();
        let id = new_id("dlv");
        Ok(on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let existing: Option<(String,)> =
                sqlx::query_as("SELECT id FROM deliveries WHERE retry_of = $1")
                    .bind(failed_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((existing,)) = existing {
                tx.rollback().await?;
                return Ok(Some(existing));
            }
            let inserted = sqlx::query(
                "INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel, recipient, status,
                    status_rank, attempts, max_attempts, not_before, retry_of, created_at, updated_at)
                 SELECT $1, organization_id, message_id, patient_id, channel, recipient, 'queued', 0, attempts,
                    max_attempts, $2, id, $3, $3
                 FROM deliveries WHERE id = $4 AND status = 'failed'",
            )
            .bind(&id)
            .bind(retry_at)
            .bind(now)
            .bind(failed_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let retry_in = (retry_at - now).max(0) as f64 / 1000.0;
            sqlx::query(
                "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at)
                 SELECT organization_id, $1, 'queued', TRUE, 'retry', $2, $3 FROM deliveries WHERE id = $1",
            )
            .bind(&id)
            .bind(format!("retry of {failed_id} ({reason}); first attempt in {retry_in:.1}s"))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Some(id)
        }))
    }

    /// The delivery that retries `failed_id`, if one was made.
    pub async fn retry_of(&self, failed_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id FROM deliveries WHERE retry_of = $1"
        )
        .bind(failed_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(id,)| id))
    }
}
