//! Urgent notifications: the staff directory (on-call order), one alert per urgent message
//! (read state, escalation), one notification per (message, recipient, channel), and named
//! cursors over the events table.

use super::{Result, Urgent, new_id, now_ms, on_db};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub message_id: String,
    pub organization_id: String,
    pub patient_id: Option<String>,
    pub audience: String,
    pub escalation_level: i64,
    pub next_escalation_at: Option<i64>,
    pub read_at: Option<i64>,
}

/// A notification to record.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub organization_id: String,
    pub message_id: String,
    pub recipient_kind: String,
    pub recipient_id: String,
    pub channel: String,
    pub address: String,
    pub status: String,
    pub digest_of: Option<String>,
    pub escalation_level: i64,
}

impl Urgent<'_> {
    /// Records the alert of an urgent message; `false` when it exists (another pass or daemon
    /// handled it).
    pub async fn insert_alert(self, alert: &AlertRow) -> Result<bool> {
        let now = now_ms();
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "INSERT INTO urgent_alerts (message_id, organization_id, patient_id, audience, escalation_level, next_escalation_at, created_at)
             VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
        )
        .bind(&alert.message_id).bind(&alert.organization_id).bind(&alert.patient_id).bind(&alert.audience)
        .bind(alert.next_escalation_at).bind(now).fetch_optional(pool).await
        })?;
        Ok(row.is_some())
    }

    /// Marks an urgent message read (stops escalation). `false` when there is no such alert.
    pub async fn mark_read(self, organization_id: &str, message_id: &str) -> Result<bool> {
        let now = now_ms();
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "UPDATE urgent_alerts SET read_at = COALESCE(read_at, $3), next_escalation_at = NULL
             WHERE organization_id = $1 AND message_id = $2 RETURNING message_id",
        ).bind(organization_id).bind(message_id).bind(now).fetch_optional(pool).await
        })?;
        Ok(row.is_some())
    }

    pub async fn due_escalations(self, now: i64, limit: i64) -> Result<Vec<AlertRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT message_id, organization_id, patient_id, audience, escalation_level, next_escalation_at, read_at
             FROM urgent_alerts WHERE read_at IS NULL AND next_escalation_at IS NOT NULL AND next_escalation_at <= $1
             ORDER BY next_escalation_at LIMIT $2",
        ).bind(now).bind(limit).fetch_all(pool).await
        })?)
    }

    /// Moves an alert from `level` to `level + 1` (only one daemon wins).
    pub async fn escalate_alert(
        self,
        message_id: &str,
        level: i64,
        next_at: Option<i64>,
    ) -> Result<bool> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "UPDATE urgent_alerts SET escalation_level = $2 + 1, next_escalation_at = $3
             WHERE message_id = $1 AND escalation_level = $2 AND read_at IS NULL RETURNING message_id",
        ).bind(message_id).bind(level).bind(next_at).fetch_optional(pool).await
        })?;
        Ok(row.is_some())
    }

    /// Records a notification; `None` when one exists for (message, recipient, channel).
    pub async fn insert_notification(self, n: &NewNotification) -> Result<Option<String>> {
        let now = now_ms();
        let id = new_id("unt");
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "INSERT INTO urgent_notifications (id, organization_id, message_id, recipient_kind, recipient_id, channel, address,
                status, digest_of, escalation_level, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (message_id, recipient_id, channel) DO NOTHING RETURNING id",
        )
        .bind(&id).bind(&n.organization_id).bind(&n.message_id).bind(&n.recipient_kind).bind(&n.recipient_id)
        .bind(&n.channel).bind(&n.address).bind(&n.status).bind(&n.digest_of).bind(n.escalation_level).bind(now)
        .fetch_optional(pool).await
        })?;
        Ok(row.map(|(id,)| id))
    }

    /// Statuses of the notifications already made for (message, recipient), by channel.
    pub async fn notifications_for(
        self,
        message_id: &str,
        recipient_id: &str,
    ) -> Result<Vec<(String, String)>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT channel, status FROM urgent_notifications WHERE message_id = $1 AND recipient_id = $2",
        ).bind(message_id).bind(recipient_id).fetch_all(pool).await
        })?)
    }

    /// The latest notification actually sent to this recipient on this channel since `since`.
    pub async fn recent_notification(
        self,
        recipient_id: &str,
        channel: &str,
        since: i64,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id FROM urgent_notifications WHERE recipient_id = $1 AND channel = $2 AND status = 'sent'
               AND created_at >= $3 ORDER BY created_at DESC LIMIT 1",
        ).bind(recipient_id).bind(channel).bind(since).fetch_optional(pool).await
        })?;
        Ok(row.map(|(id,)| id))
    }

    pub async fn set_notification_message(self, id: &str, message_id: &str) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE urgent_notifications SET notification_message_id = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(message_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Sent notifications whose carrying delivery failed: `(id, organization, message, kind,
    /// recipient, level)`, each marked `failed_over` so it is handled once.
    pub async fn take_failed_notifications(
        self,
        limit: i64,
    ) -> Result<Vec<(String, String, String, String, String, i64)>> {
        let rows: Vec<(String, String, String, String, String, i64)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT n.id, n.organization_id, n.message_id, n.recipient_kind, n.recipient_id, n.escalation_level
             FROM urgent_notifications n JOIN deliveries d ON d.message_id = n.notification_message_id
             WHERE n.status = 'sent' AND d.status = 'failed' LIMIT $1",
        ).bind(limit).fetch_all(pool).await
        })?;
        let mut taken = Vec::new();
        for row in rows {
            let updated: Option<(String,)> = on_db!(self.db(), |pool| {
                sqlx::query_as(
                "UPDATE urgent_notifications SET status = 'failed_over' WHERE id = $1 AND status = 'sent' RETURNING id",
            ).bind(&row.0).fetch_optional(pool).await
            })?;
            if updated.is_some() {
                taken.push(row);
            }
        }
        Ok(taken)
    }
}
