//! Direct tracking queries: the delivery a notification reports on (by our Message-ID and
//! the final recipient), and the deliveries whose MDN did not come in time.

use super::{Direct, Result, on_db};

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
}
