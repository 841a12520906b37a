//! Inbound items: everything received (SMS, fax, Direct) is recorded sealed before it is
//! acknowledged, then filed into a patient's thread or left in the unmatched queue for a
//! person. Redelivered webhooks (same provider id) are recorded once.

use super::audit::bind_audit;
use super::{AuditEntry, Inbound, Result, StoreError, now_ms, on_db};

/// Inserts one of an item's steps (`inbound_steps`) on a connection or transaction.
macro_rules! insert_step {
    ($conn:expr, $org:expr, $item:expr, $step:expr, $status:expr, $detail:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO inbound_steps (organization_id, inbound_item_id, step, status, detail, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($org)
        .bind($item)
        .bind($step)
        .bind($status)
        .bind($detail)
        .bind($now)
        .execute($conn)
        .await?
    };
}
pub(super) use insert_step;

/// An item as received.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub organization_id: String,
    pub channel: String,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    pub sender: String,
    pub recipient: Option<String>,
    /// Sealed with the item id as associated data.
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct InboundRow {
    pub id: String,
    pub organization_id: String,
    pub channel: String,
    pub sender: String,
    pub recipient: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub patient_id: Option<String>,
    pub thread_id: Option<String>,
    pub message_id: Option<String>,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    #[serde(skip)]
    pub raw: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The matching rule that chose the patient (`reply`, `identifier`, `demographics`,
    /// `contact`), or `manual` when a person did.
    pub match_method: Option<String>,
    /// JSON `[{"patient_id", "method"}]`: who matching proposed when it could not decide.
    pub candidates: Option<String>,
    /// What security processing opened the item to (Direct: the unwrapped inner message),
    /// sealed with `opened:<id>` as associated data; intake parses this when present.
    #[serde(skip)]
    pub opened: Option<Vec<u8>>,
    /// The trust check a quarantined item failed (Direct).
    pub quarantine_check: Option<String>,
    /// When a quarantined item is processed again (its check could not be made).
    pub retry_at: Option<i64>,
}

macro_rules! inbound_columns {
    () => {
        "id, organization_id, channel, sender, recipient, status, reason, patient_id, thread_id, \
         message_id, connector, provider_ref, raw, created_at, updated_at, match_method, candidates, \
         opened, quarantine_check, retry_at"
    };
}
pub(super) use inbound_columns;

/// Filing an inbound item as a message in a thread (created when the patient has none open).
#[derive(Debug, Clone)]
pub struct FileInbound {
    pub item_id: String,
    pub organization_id: String,
    pub patient_id: String,
    /// An open thread of the patient, or the id of the thread to open.
    pub thread_id: String,
    /// Whether `thread_id` is to be opened.
    pub new_thread: bool,
    pub message_id: String,
    /// Sealed message content (with `message_id` as associated data).
    pub content: Vec<u8>,
    pub metadata: String,
    /// The step recorded (`filed` by the pipeline, `resolved` by a person).
    pub step: &'static str,
    /// The step's detail (JSON, ids and codes only).
    pub detail: String,
    /// A person's decision, audited in the same transaction.
    pub audit: Option<AuditEntry>,
    /// The item's files, sealed, stored with the message.
    pub attachments: Vec<super::NewAttachment>,
}

impl Inbound<'_> {
    /// Records an item as `received` (with its `received` step). Returns `(id, true)` for a
    /// new item, or the existing item's id and `false` when the provider id was seen before.
    pub async fn record(self, id: &str, item: &NewInbound) -> Result<(String, bool)> {
        let now = now_ms();
        let detail =
            serde_json::json!({"channel": item.channel, "connector": item.connector}).to_string();
        let inserted: Option<(String,)> = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let inserted: Option<(String,)> = sqlx::query_as(
            "INSERT INTO inbound_items (id, organization_id, channel, sender, recipient, status, raw,
                connector, provider_ref, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'received', $6, $7, $8, $9, $9)
             ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(id).bind(&item.organization_id).bind(&item.channel).bind(&item.sender).bind(&item.recipient)
            .bind(&item.raw).bind(&item.connector).bind(&item.provider_ref).bind(now)
            .fetch_optional(&mut *tx).await?;
            if inserted.is_some() {
                insert_step!(
                    &mut *tx,
                    &item.organization_id,
                    id,
                    "received",
                    "received",
                    Some(&detail),
                    now
                );
            }
            tx.commit().await?;
            inserted
        });
        if let Some((id,)) = inserted {
            return Ok((id, true));
        }
        let existing: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id FROM inbound_items WHERE organization_id = $1 AND channel = $2 AND provider_ref = $3",
        )
        .bind(&item.organization_id).bind(&item.channel).bind(&item.provider_ref)
        .fetch_optional(pool).await
        })?;
        existing
            .map(|(id,)| (id, false))
            .ok_or(StoreError::NotFound)
    }

    pub async fn item(self, organization_id: &str, id: &str) -> Result<InboundRow> {
        let sql = concat!(
            "SELECT ",
            inbound_columns!(),
            " FROM inbound_items WHERE organization_id = $1 AND id = $2"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Any organization's inbound item (the operator's CLI names items by id alone).
    pub async fn item_by_id(self, id: &str) -> Result<InboundRow> {
        let sql = concat!(
            "SELECT ",
            inbound_columns!(),
            " FROM inbound_items WHERE id = $1"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Items of an organization in a status (`unmatched`, `received`, ...), oldest first.
    pub async fn items(
        self,
        organization_id: &str,
        status: &str,
        limit: i64,
    ) -> Result<Vec<InboundRow>> {
        let sql = concat!(
            "SELECT ",
            inbound_columns!(),
            " FROM inbound_items WHERE organization_id = $1 AND status = $2 ORDER BY created_at, id LIMIT $3"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Files the item: a new inbound message in the patient's thread (and the thread when
    /// needed), the item marked `filed`, its step, an `inbound.filed` event and (for a
    /// person's decision) the audit row, in one transaction. Only a `received` or `unmatched`
    /// item is filed: anything else is a `Conflict` naming its status. Returns the thread id.
    pub async fn file(self, file: &FileInbound) -> Result<String> {
        let now = now_ms();
        let thread_id = file.thread_id.clone();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "UPDATE inbound_items SET status = 'filed', reason = NULL, patient_id = $2, thread_id = $3, message_id = $4, updated_at = $5
                 WHERE id = $1 AND organization_id = $6 AND status IN ('received', 'unmatched')",
            )
            .bind(&file.item_id).bind(&file.patient_id).bind(&thread_id).bind(&file.message_id).bind(now)
            .bind(&file.organization_id)
            .execute(&mut *tx).await?.rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "inbound item is not waiting to be filed".into(),
                ));
            }
            if file.new_thread {
                sqlx::query(
                    "INSERT INTO threads (id, organization_id, patient_id, category, status, created_at, updated_at)
                     VALUES ($1, $2, $3, 'routine', 'open', $4, $4)",
                )
                .bind(&thread_id).bind(&file.organization_id).bind(&file.patient_id).bind(now)
                .execute(&mut *tx).await?;
            } else {
                sqlx::query("UPDATE threads SET updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&thread_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO messages (id, organization_id, thread_id, patient_id, direction, content, urgent, part2, metadata, created_at)
                 VALUES ($1, $2, $3, $4, 'inbound', $5, $6, $7, $8, $9)",
            )
            .bind(&file.message_id).bind(&file.organization_id).bind(&thread_id).bind(&file.patient_id)
            .bind(&file.content).bind(false).bind(false).bind(&file.metadata).bind(now)
            .execute(&mut *tx).await?;
            for attachment in &file.attachments {
                sqlx::query(super::attachments::INSERT_ATTACHMENT)
                    .bind(&attachment.id)
                    .bind(&file.organization_id)
                    .bind(&file.message_id)
                    .bind(&attachment.filename)
                    .bind(&attachment.content_type)
                    .bind(attachment.size)
                    .bind(&attachment.sha256)
                    .bind(&attachment.sealed[..])
                    .bind(attachment.position)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_step!(
                &mut *tx,
                &file.organization_id,
                &file.item_id,
                file.step,
                "filed",
                Some(&file.detail),
                now
            );
            if let Some(audit) = &file.audit {
                bind_audit!(audit, now).execute(&mut *tx).await?;
            }
            let payload = serde_json::json!({
                "inbound_item_id": file.item_id, "thread_id": thread_id, "message_id": file.message_id,
                "patient_id": file.patient_id,
            }).to_string();
            sqlx::query("INSERT INTO events (organization_id, kind, subject_id, payload, created_at) VALUES ($1, 'inbound.filed', $2, $3, $4)")
                .bind(&file.organization_id).bind(&file.message_id).bind(payload).bind(now)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(thread_id)
    }

    /// Keeps an item no organization owns, sealed, for the operator. Returns `(id, true)` for
    /// a new orphan, or the existing one's id and `false` when the provider id was seen.
    pub async fn record_orphan(self, id: &str, orphan: &NewOrphan) -> Result<(String, bool)> {
        let now = now_ms();
        let inserted: Option<(String,)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            "INSERT INTO inbound_orphans (id, channel, connector, provider_ref, sender, recipient, reason, raw, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(id).bind(&orphan.channel).bind(&orphan.connector).bind(&orphan.provider_ref)
        .bind(&orphan.sender).bind(&orphan.recipient).bind(&orphan.reason).bind(&orphan.raw).bind(now)
        .fetch_optional(pool).await
        })?;
        if let Some((id,)) = inserted {
            return Ok((id, true));
        }
        let existing: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id FROM inbound_orphans WHERE connector = $1 AND provider_ref = $2",
        )
        .bind(&orphan.connector)
        .bind(&orphan.provider_ref)
        .fetch_optional(pool)
        .await)?;
        existing
            .map(|(id,)| (id, false))
            .ok_or(StoreError::NotFound)
    }

    /// Orphans, newest first (operator only: they belong to no organization).
    pub async fn orphans(self, limit: i64) -> Result<Vec<OrphanRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, channel, connector, provider_ref, sender, recipient, reason, created_at
             FROM inbound_orphans ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Records a provider webhook event; `false` when it was recorded before (a replay).
    pub async fn record_webhook_event(self, connector: &str, event_id: &str) -> Result<bool> {
        let now = now_ms();
        let inserted: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "INSERT INTO webhook_events (connector, event_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(connector)
        .bind(event_id)
        .bind(now)
        .fetch_optional(pool)
        .await)?;
        Ok(inserted.is_some())
    }

    /// Forgets a recorded webhook event (its processing failed and it may come again).
    pub async fn forget_webhook_event(self, connector: &str, event_id: &str) -> Result<()> {
        on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM webhook_events WHERE connector = $1 AND event_id = $2"
        )
        .bind(connector)
        .bind(event_id)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}

/// An item no organization owns.
#[derive(Debug, Clone)]
pub struct NewOrphan {
    pub channel: String,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    pub sender: String,
    pub recipient: Option<String>,
    /// Why no organization was chosen.
    pub reason: String,
    /// Sealed with the orphan id as associated data.
    pub raw: Vec<u8>,
}

/// An orphan as listed (without its sealed content).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct OrphanRow {
    pub id: String,
    pub channel: String,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    pub sender: String,
    pub recipient: Option<String>,
    pub reason: String,
    pub created_at: i64,
}
