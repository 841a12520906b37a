//! Faxes out: the provider's record of each fax we sent, keyed by (provider, direction,
//! provider id), and the documents we serve to providers that fetch them (sealed, once per
//! token, until they expire). The sealing, tokens and policy are `crate::fax`'s. (The retry of
//! a fax whose line was busy is a delivery: `DeliveryUpdate::retry_at`.)

use super::{Faxes, Result, now_ms, on_db};

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

impl Faxes<'_> {
    /// Records an outbound fax the provider accepted (a repeat is a no-op).
    pub async fn record_sent(
        self,
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
    pub async fn note_report(
        self,
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
    pub async fn records_of_delivery(self, delivery_id: &str) -> Result<Vec<FaxRecordRow>> {
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
    pub async fn insert_media(
        self,
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
    pub async fn take_media(self, token_hash: &str, now: i64) -> Result<Option<FaxMediaRow>> {
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
}
