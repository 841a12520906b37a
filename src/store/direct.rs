//! Direct tracking queries: the delivery a notification reports on (by our Message-ID and
//! the final recipient), and the deliveries whose MDN did not come in time.

use super::{Direct, Result, on_db};

/// A Direct connector's deliveries of one organization as they wait for MDNs.
#[derive(Debug, Clone, Default)]
pub struct MdnFigures {
    /// Still `sent` (no processed MDN yet).
    pub awaiting: i64,
    /// Of those, sent before the `overdue_before` asked for.
    pub overdue: i64,
    /// When the oldest one waiting was sent (unix ms).
    pub oldest_awaiting_at: Option<i64>,
    /// Expired (no MDN within the timeout) since the `since` asked for.
    pub expired: i64,
}

impl Direct<'_> {
    /// The delivery of `connector` sent with Message-ID `message_id` (case-insensitive),
    /// to `recipient` when given (lowercased).
    pub async fn delivery_for(
        self,
        connector: &str,
        message_id: &str,
        recipient: Option<&str>,
    ) -> Result<Option<String>> {
        let rows: Vec<(String, String)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id, recipient FROM deliveries WHERE connector = $1 AND LOWER(provider_ref) = LOWER($2)",
        )
        .bind(connector).bind(message_id).fetch_all(pool).await
        })?;
        Ok(rows
            .into_iter()
            .find(|(_, r)| recipient.is_none_or(|want| r.trim().eq_ignore_ascii_case(want)))
            .map(|(id, _)| id))
    }

    /// Deliveries of `connector` still `sent` since before `sent_before`, or `processed`
    /// since before `processed_before`: (id, status).
    pub async fn overdue(
        self,
        connector: &str,
        sent_before: i64,
        processed_before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let processed_before = processed_before.unwrap_or(i64::MIN);
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, status FROM deliveries
             WHERE connector = $1 AND ((status = 'sent' AND updated_at < $2)
                OR (status = 'processed' AND updated_at < $3))
             ORDER BY updated_at LIMIT $4",
        )
        .bind(connector)
        .bind(sent_before)
        .bind(processed_before)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// How the organization's deliveries through `connector` wait for MDNs (see
    /// [`MdnFigures`]).
    pub async fn mdn_figures(
        self,
        organization_id: &str,
        connector: &str,
        overdue_before: i64,
        since: i64,
    ) -> Result<MdnFigures> {
        let (awaiting, overdue, oldest_awaiting_at, expired): (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN status = 'sent' AND updated_at < $3 THEN 1 ELSE 0 END),
                    MIN(CASE WHEN status = 'sent' THEN updated_at END),
                    SUM(CASE WHEN status = 'expired' AND updated_at >= $4 THEN 1 ELSE 0 END)
             FROM deliveries WHERE organization_id = $1 AND connector = $2
               AND status IN ('sent', 'expired')"
        )
        .bind(organization_id)
        .bind(connector)
        .bind(overdue_before)
        .bind(since)
        .fetch_one(pool)
        .await)?;
        Ok(MdnFigures {
            awaiting: awaiting.unwrap_or(0),
            overdue: overdue.unwrap_or(0),
            oldest_awaiting_at,
            expired: expired.unwrap_or(0),
        })
    }
}
