//! Threads and messages: accepting an outbound message (message + deliveries + events, one
//! transaction, idempotent per key) and reading message records back.

use super::events::INSERT_EVENT;
use super::{
    DeliveryEventRow, DeliveryRow, MessageRow, Result, Store, StoreError, ThreadRow, on_db,
};

/// A message to record. `content` is already sealed.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub organization_id: String,
    pub thread_id: String,
    /// Create the thread in the same transaction (category) instead of using an existing one.
    pub new_thread_category: Option<String>,
    pub patient_id: Option<String>,
    pub direction: String,
    pub content: Vec<u8>,
    pub urgent: bool,
    pub part2: bool,
    pub metadata: String,
    /// Unix ms; also the deliveries' creation time.
    pub created_at: i64,
}

/// One delivery to create with the message, in status `queued`.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub channel: String,
    pub recipient: String,
    pub max_attempts: i64,
}

/// What accepting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// New message recorded.
    Created,
    /// The idempotency key was seen before with the same request: that message's id.
    Replayed(String),
    /// The idempotency key was seen before with a different request.
    KeyReused,
}

impl Store {
    /// Records a message and its deliveries durably, with their `queued` events, in one
    /// transaction. With an idempotency key `(key, request_hash)` a repeat returns the first
    /// message instead of creating another.
    pub async fn accept_message(
        &self,
        message: &NewMessage,
        deliveries: &[NewDelivery],
        idempotency: Option<(&str, &str)>,
    ) -> Result<AcceptOutcome> {
        let now = message.created_at;
        let org = &message.organization_id;
        let accepted = serde_json::json!({
            "message_id": message.id, "thread_id": message.thread_id, "urgent": message.urgent,
            "deliveries": deliveries.iter().map(|d| &d.id).collect::<Vec<_>>(),
        })
        .to_string();
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            if let Some((key, hash)) = idempotency {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (organization_id, key, request_hash, message_id, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (organization_id, key) DO NOTHING",
                )
                .bind(org).bind(key).bind(hash).bind(&message.id).bind(now)
                .execute(&mut *tx).await?.rows_affected();
                if inserted == 0 {
                    let (seen_hash, seen_id): (String, String) = sqlx::query_as(
                        "SELECT request_hash, message_id FROM idempotency_keys WHERE organization_id = $1 AND key = $2",
                    )
                    .bind(org).bind(key).fetch_one(&mut *tx).await?;
                    tx.rollback().await?;
                    return Ok(if seen_hash == hash { AcceptOutcome::Replayed(seen_id) } else { AcceptOutcome::KeyReused });
                }
            }
            if let Some(category) = &message.new_thread_category {
                sqlx::query(
                    "INSERT INTO threads (id, organization_id, patient_id, category, status, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, 'open', $5, $5)",
                )
                .bind(&message.thread_id).bind(org).bind(&message.patient_id).bind(category).bind(now)
                .execute(&mut *tx).await?;
            } else {
                sqlx::query("UPDATE threads SET updated_at = $1 WHERE id = $2")
                    .bind(now).bind(&message.thread_id).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO messages (id, organization_id, thread_id, patient_id, direction, content, urgent, part2, metadata, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&message.id).bind(org).bind(&message.thread_id).bind(&message.patient_id)
            .bind(&message.direction).bind(&message.content).bind(message.urgent).bind(message.part2)
            .bind(&message.metadata).bind(now)
            .execute(&mut *tx).await?;
            sqlx::query(INSERT_EVENT)
                .bind(org).bind("message.accepted").bind(&message.id).bind(&accepted).bind(now)
                .execute(&mut *tx).await?;
            if message.urgent {
                sqlx::query(INSERT_EVENT)
                    .bind(org).bind("urgent_message_sent").bind(&message.id).bind(&accepted).bind(now)
                    .execute(&mut *tx).await?;
            }
            for delivery in deliveries {
                sqlx::query(
                    "INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel, recipient, status,
                        status_rank, attempts, max_attempts, enqueued_at, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, 0, $7, $8, $8, $8)",
                )
                .bind(&delivery.id).bind(org).bind(&message.id).bind(&message.patient_id)
                .bind(&delivery.channel).bind(&delivery.recipient).bind(delivery.max_attempts).bind(now)
                .execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at)
                     VALUES ($1, $2, 'queued', TRUE, 'api', NULL, $3)",
                )
                .bind(org).bind(&delivery.id).bind(now)
                .execute(&mut *tx).await?;
                let payload = serde_json::json!({
                    "delivery_id": delivery.id, "message_id": message.id, "channel": delivery.channel, "status": "queued",
                }).to_string();
                sqlx::query(INSERT_EVENT)
                    .bind(org).bind("delivery.status").bind(&delivery.id).bind(&payload).bind(now)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(AcceptOutcome::Created)
    }

    pub async fn message(&self, organization_id: &str, id: &str) -> Result<MessageRow> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE organization_id = $1 AND id = $2"
        );
        on_db!(self.db(), pool => sqlx::query_as(sql).bind(organization_id).bind(id).fetch_optional(pool).await)?
            .ok_or(StoreError::NotFound)
    }

    /// Deliveries of a message, in creation order.
    pub async fn deliveries_of(&self, message_id: &str) -> Result<Vec<DeliveryRow>> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE message_id = $1 ORDER BY id"
        );
        Ok(on_db!(self.db(), pool => sqlx::query_as(sql).bind(message_id).fetch_all(pool).await)?)
    }

    /// Status history of every delivery of a message, oldest first.
    pub async fn delivery_events_of(&self, message_id: &str) -> Result<Vec<DeliveryEventRow>> {
        Ok(on_db!(self.db(), pool => sqlx::query_as(
            "SELECT e.delivery_id, e.status, e.applied, e.source, e.detail, e.created_at
             FROM delivery_events e JOIN deliveries d ON d.id = e.delivery_id
             WHERE d.message_id = $1 ORDER BY e.id",
        )
        .bind(message_id).fetch_all(pool).await)?)
    }

    pub async fn thread(&self, organization_id: &str, id: &str) -> Result<ThreadRow> {
        on_db!(self.db(), pool => sqlx::query_as(
            "SELECT id, organization_id, patient_id, category, status, created_at FROM threads
             WHERE organization_id = $1 AND id = $2",
        )
        .bind(organization_id).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)
    }

    /// The patient's most recently active open thread, if any.
    pub async fn open_thread_of(
        &self,
        organization_id: &str,
        patient_id: &str,
    ) -> Result<Option<ThreadRow>> {
        Ok(on_db!(self.db(), pool => sqlx::query_as(
            "SELECT id, organization_id, patient_id, category, status, created_at FROM threads
             WHERE organization_id = $1 AND patient_id = $2 AND status = 'open'
             ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(organization_id).bind(patient_id).fetch_optional(pool).await)?)
    }

    /// Messages of a thread, oldest first.
    pub async fn thread_messages(
        &self,
        organization_id: &str,
        thread_id: &str,
        limit: i64,
    ) -> Result<Vec<MessageRow>> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE organization_id = $1 AND thread_id = $2 ORDER BY id LIMIT $3"
        );
        Ok(
            on_db!(self.db(), pool => sqlx::query_as(sql).bind(organization_id).bind(thread_id).bind(limit)
            .fetch_all(pool).await)?,
        )
    }
}

impl Store {
    /// The organization a message belongs to (operator commands, which see all organizations).
    pub async fn organization_of_message(&self, message_id: &str) -> Result<String> {
        let row: Option<(String,)> = on_db!(self.db(), pool => sqlx::query_as(
            "SELECT organization_id FROM messages WHERE id = $1",
        )
        .bind(message_id).fetch_optional(pool).await)?;
        row.map(|(org,)| org).ok_or(StoreError::NotFound)
    }
}
