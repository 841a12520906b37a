//! The intake pipeline's records (`crate::intake` decides): each inbound item's steps in
//! order, what matching decided (`match_method`, `candidates`), the outcomes that are not a
//! filing (unmatched, processed, dismissed), a person moving a filed item to another patient,
//! and the lookup reply correlation needs. Each outcome changes the item only from the states
//! it may leave (a `Conflict` otherwise), with its step, event and audit row in one
//! transaction.

use super::audit::bind_audit;
use super::inbound::insert_step;
use super::{AuditEntry, Inbound, Result, StoreError, now_ms, on_db};

/// One step of an item, as recorded.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct StepRow {
    pub step: String,
    /// The item's status after the step.
    pub status: String,
    /// JSON, ids and codes only.
    pub detail: Option<String>,
    pub created_at: i64,
}

/// A person moves a filed item's message to another patient's thread.
#[derive(Debug, Clone)]
pub struct ReassignInbound {
    pub organization_id: String,
    pub item_id: String,
    pub message_id: String,
    /// The patient it is filed for now (the move is refused if that changed meanwhile).
    pub from_patient_id: String,
    pub to_patient_id: String,
    /// The new patient's open thread, or the id of the thread to open.
    pub to_thread_id: String,
    /// Whether `to_thread_id` is to be opened.
    pub new_thread: bool,
    pub detail: String,
    pub audit: AuditEntry,
}

impl Inbound<'_> {
    /// Records a step of an item (its status unchanged).
    pub async fn record_step(
        self,
        organization_id: &str,
        item_id: &str,
        step: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            insert_step!(pool, organization_id, item_id, step, status, detail, now);
        });
        Ok(())
    }

    /// An item's steps, in the order they happened.
    pub async fn steps(self, organization_id: &str, item_id: &str) -> Result<Vec<StepRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT step, status, detail, created_at FROM inbound_steps
             WHERE organization_id = $1 AND inbound_item_id = $2 ORDER BY id",
        )
        .bind(organization_id)
        .bind(item_id)
        .fetch_all(pool)
        .await)?)
    }

    /// Records what matching decided: the rule that chose the patient (or none) and the
    /// candidates (JSON), with the `matched` step.
    pub async fn record_match(
        self,
        organization_id: &str,
        item_id: &str,
        match_method: Option<&str>,
        candidates: &str,
        detail: &str,
    ) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let status: Option<(String,)> = sqlx::query_as(
                "UPDATE inbound_items SET match_method = $3, candidates = $4, updated_at = $5
                 WHERE organization_id = $1 AND id = $2 RETURNING status",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(match_method)
            .bind(candidates)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((status,)) = status else {
                tx.rollback().await?;
                return Err(StoreError::NotFound);
            };
            insert_step!(
                &mut *tx,
                organization_id,
                item_id,
                "matched",
                &status,
                Some(detail),
                now
            );
            tx.commit().await?;
        });
        Ok(())
    }

    /// Leaves a `received` (or, reprocessed, `unmatched`) item in the unmatched queue, with
    /// its step and the `inbound.unmatched` event.
    pub async fn park(
        self,
        organization_id: &str,
        item_id: &str,
        reason: &str,
        detail: &str,
    ) -> Result<()> {
        let now = now_ms();
        let payload =
            serde_json::json!({"inbound_item_id": item_id, "patient_id": null}).to_string();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE inbound_items SET status = 'unmatched', reason = $3, updated_at = $4
                 WHERE organization_id = $1 AND id = $2 AND status IN ('received', 'unmatched')",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "inbound item is not waiting to be filed".into(),
                ));
            }
            insert_step!(
                &mut *tx,
                organization_id,
                item_id,
                "unmatched",
                "unmatched",
                Some(detail),
                now
            );
            sqlx::query(
                "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
                 VALUES ($1, 'inbound.unmatched', $2, $3, $4)",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(&payload)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Marks an item handled without filing it (a keyword: opt-out, opt-in, help), with its
    /// `processed` step.
    pub async fn process(
        self,
        organization_id: &str,
        item_id: &str,
        reason: &str,
        patient_id: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let detail = serde_json::json!({"keyword": reason}).to_string();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE inbound_items SET status = 'processed', reason = $3,
                    patient_id = COALESCE($4, patient_id), updated_at = $5
                 WHERE organization_id = $1 AND id = $2",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(reason)
            .bind(patient_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            insert_step!(
                &mut *tx,
                organization_id,
                item_id,
                "processed",
                "processed",
                Some(&detail),
                now
            );
            tx.commit().await?;
        });
        Ok(())
    }

    /// A person dismisses an unmatched (or stuck `received`) item: `dismissed` with the
    /// reason, its step, the audit row and an `inbound.dismissed` event.
    pub async fn dismiss(
        self,
        organization_id: &str,
        item_id: &str,
        reason: &str,
        detail: &str,
        audit: &AuditEntry,
    ) -> Result<()> {
        let now = now_ms();
        let payload = serde_json::json!({"inbound_item_id": item_id}).to_string();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE inbound_items SET status = 'dismissed', reason = $3, updated_at = $4
                 WHERE organization_id = $1 AND id = $2 AND status IN ('received', 'unmatched')",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "only an unmatched item can be dismissed".into(),
                ));
            }
            insert_step!(
                &mut *tx,
                organization_id,
                item_id,
                "dismissed",
                "dismissed",
                Some(detail),
                now
            );
            bind_audit!(audit, now).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
                 VALUES ($1, 'inbound.dismissed', $2, $3, $4)",
            )
            .bind(organization_id)
            .bind(item_id)
            .bind(&payload)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Moves a filed item's message into another patient's thread (opened when the patient
    /// has none), with its step, the audit row and an `inbound.reassigned` event. Refused
    /// (`Conflict`) unless the item is still filed for `from_patient_id`. Returns the thread.
    pub async fn reassign(self, move_: &ReassignInbound) -> Result<String> {
        let now = now_ms();
        let thread_id = move_.to_thread_id.clone();
        let payload = serde_json::json!({
            "inbound_item_id": move_.item_id, "message_id": move_.message_id,
            "patient_id": move_.to_patient_id, "thread_id": thread_id,
            "from_patient_id": move_.from_patient_id,
        })
        .to_string();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(
                "UPDATE inbound_items SET patient_id = $3, thread_id = $4, match_method = 'manual', updated_at = $5
                 WHERE organization_id = $1 AND id = $2 AND status = 'filed' AND patient_id = $6",
            )
            .bind(&move_.organization_id)
            .bind(&move_.item_id)
            .bind(&move_.to_patient_id)
            .bind(&thread_id)
            .bind(now)
            .bind(&move_.from_patient_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "only a filed item can be reassigned".into(),
                ));
            }
            if move_.new_thread {
                sqlx::query(
                    "INSERT INTO threads (id, organization_id, patient_id, category, status, created_at, updated_at)
                     VALUES ($1, $2, $3, 'routine', 'open', $4, $4)",
                )
                .bind(&thread_id)
                .bind(&move_.organization_id)
                .bind(&move_.to_patient_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query("UPDATE threads SET updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(&thread_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE messages SET thread_id = $3, patient_id = $4 WHERE organization_id = $1 AND id = $2",
            )
            .bind(&move_.organization_id)
            .bind(&move_.message_id)
            .bind(&thread_id)
            .bind(&move_.to_patient_id)
            .execute(&mut *tx)
            .await?;
            insert_step!(
                &mut *tx,
                &move_.organization_id,
                &move_.item_id,
                "reassigned",
                "filed",
                Some(&move_.detail),
                now
            );
            bind_audit!(move_.audit, now).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
                 VALUES ($1, 'inbound.reassigned', $2, $3, $4)",
            )
            .bind(&move_.organization_id)
            .bind(&move_.message_id)
            .bind(&payload)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(thread_id)
    }

    /// Our latest SMS to `recipient` (E.164) through `connector` for a patient of the
    /// organization since `since` (unix ms) that reached the provider: the conversation an
    /// inbound text from that number answers. A delivery keeps its recipient as the contact
    /// point was written, so the contact points with that E.164 form name it too; and the
    /// patient must still have the number (a number given up and reassigned since answers for
    /// its new holder, not the old one).
    pub async fn last_outbound_sms(
        self,
        organization_id: &str,
        connector: &str,
        recipient: &str,
        since: i64,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT message_id FROM deliveries
             WHERE organization_id = $1 AND channel = 'sms' AND connector = $2
               AND (recipient = $3 OR recipient IN (SELECT value FROM contact_points
                                                    WHERE organization_id = $1 AND e164 = $3))
               AND status IN ('sent', 'delivered') AND created_at >= $4
               AND patient_id IN (SELECT patient_id FROM contact_points
                                  WHERE organization_id = $1 AND e164 = $3)
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(organization_id)
        .bind(connector)
        .bind(recipient)
        .bind(since)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(id,)| id))
    }
}
