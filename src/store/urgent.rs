//! Urgent notifications: the staff directory (on-call order), one alert per urgent message
//! (read state, escalation), one notification per (message, recipient, channel), and named
//! cursors over the events table.

use super::{EventRow, Result, Store, new_id, now_ms, on_db};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct StaffRow {
    pub id: String,
    pub external_id: String,
    pub name: String,
    pub sms: Option<String>,
    pub email: Option<String>,
    pub on_call_rank: Option<i64>,
    pub active: bool,
}

#[derive(Debug, Clone)]
pub struct StaffInput {
    pub external_id: String,
    pub name: String,
    pub sms: Option<String>,
    pub email: Option<String>,
    pub on_call_rank: Option<i64>,
    pub active: bool,
}

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

const STAFF_COLUMNS: &str = "id, external_id, name, sms, email, on_call_rank, active";

impl Store {
    pub async fn upsert_staff(
        &self,
        organization_id: &str,
        input: &StaffInput,
    ) -> Result<StaffRow> {
        let now = now_ms();
        let sql = "INSERT INTO staff (id, organization_id, external_id, name, sms, email, on_call_rank, active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (organization_id, external_id) DO UPDATE SET name = excluded.name, sms = excluded.sms,
                email = excluded.email, on_call_rank = excluded.on_call_rank, active = excluded.active, updated_at = excluded.updated_at
             RETURNING id, external_id, name, sms, email, on_call_rank, active";
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(new_id("stf"))
            .bind(organization_id)
            .bind(&input.external_id)
            .bind(&input.name)
            .bind(&input.sms)
            .bind(&input.email)
            .bind(input.on_call_rank)
            .bind(input.active)
            .bind(now)
            .fetch_one(pool)
            .await)?)
    }

    /// Active staff of an organization, on-call order first.
    pub async fn staff(&self, organization_id: &str) -> Result<Vec<StaffRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE organization_id = $1
             ORDER BY CASE WHEN on_call_rank IS NULL THEN 1 ELSE 0 END, on_call_rank, external_id"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .fetch_all(pool)
            .await)?)
    }

    /// The active staff member at this position (0-based) of the on-call order.
    pub async fn on_call(&self, organization_id: &str, position: i64) -> Result<Option<StaffRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STAFF_COLUMNS} FROM staff WHERE organization_id = $1 AND active AND on_call_rank IS NOT NULL
             ORDER BY on_call_rank, external_id LIMIT 1 OFFSET $2"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(position)
            .fetch_optional(pool)
            .await)?)
    }

    pub async fn staff_member(&self, id: &str) -> Result<Option<StaffRow>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {STAFF_COLUMNS} FROM staff WHERE id = $1"));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?)
    }

    pub async fn cursor(&self, name: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT position FROM cursors WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(p,)| p))
    }

    pub async fn set_cursor(&self, name: &str, position: i64) -> Result<()> {
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO cursors (name, position) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position WHERE cursors.position < excluded.position",
        ).bind(name).bind(position).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Events of these kinds created at or after `since` (unix ms), all organizations, in
    /// (created_at, id) order, after the key `(after_time, after_id)` when given (paging).
    pub async fn events_of_kinds_since(
        &self,
        kinds: &[&str],
        since: i64,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let list = kinds
            .iter()
            .map(|k| format!("'{}'", k.replace('\'', "")))
            .collect::<Vec<_>>()
            .join(", ");
        let (after_time, after_id) = after.unwrap_or((since, i64::MIN));
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT id, organization_id, kind, subject_id, payload, created_at FROM events
             WHERE kind IN ({list}) AND created_at >= $1 AND (created_at > $2 OR (created_at = $2 AND id > $3))
             ORDER BY created_at, id LIMIT $4"
        ));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(since)
            .bind(after_time)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Records the alert of an urgent message; `false` when it exists (another pass or daemon
    /// handled it).
    pub async fn insert_alert(&self, alert: &AlertRow) -> Result<bool> {
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
    pub async fn mark_read(&self, organization_id: &str, message_id: &str) -> Result<bool> {
        let now = now_ms();
        let row: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "UPDATE urgent_alerts SET read_at = COALESCE(read_at, $3), next_escalation_at = NULL
             WHERE organization_id = $1 AND message_id = $2 RETURNING message_id",
        ).bind(organization_id).bind(message_id).bind(now).fetch_optional(pool).await
        })?;
        Ok(row.is_some())
    }

    pub async fn due_escalations(&self, now: i64, limit: i64) -> Result<Vec<AlertRow>> {
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
        &self,
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
    pub async fn insert_notification(&self, n: &NewNotification) -> Result<Option<String>> {
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
        &self,
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
        &self,
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

    pub async fn set_notification_message(&self, id: &str, message_id: &str) -> Result<()> {
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
        &self,
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
