//! Deliveries: claiming one for a send attempt, moving it through the state machine
//! (`crate::domain::delivery`: the `WHERE` of every move is generated from
//! `DeliveryStatus::can_move_to` / `is_claimable`, so the SQL cannot drift from the rule),
//! retry scheduling, dead letters and the sweep that finds deliveries whose job was lost.

use super::MessageRow;
use super::{
    AuditEntry, DeadLetterRow, Deliveries, DeliveryRow, Result, StoreError, new_id, now_ms, on_db,
};
use crate::domain::DeliveryStatus;

/// A delivery leased to this worker for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: DeliveryRow,
    pub message: MessageRow,
    /// The message's attachments (metadata, in the sender's order), read with the claim: one
    /// query for the batch instead of one per delivery.
    pub attachments: Vec<super::AttachmentRow>,
}

/// The channels whose provider reports back (status callbacks to us) and how much longer than
/// the lease a claim holds their deliveries. A worker that dies after the provider took a
/// message but before the outcome was recorded leaves the delivery `sending`, in doubt: the
/// provider's callback then has this long to say the message went out (moving it on, so it is
/// no longer claimable) before another worker sends it again.
#[derive(Debug, Clone, Default)]
pub struct InDoubt {
    pub channels: Vec<String>,
    pub hold_ms: i64,
}

/// A status report to apply to a delivery.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub status: DeliveryStatus,
    /// Who reported it: `worker`, `webhook:twilio`, `mdn`, ...
    pub source: String,
    /// Free text for the history (no PHI).
    pub detail: Option<String>,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    /// Why it failed, shown on the record.
    pub reason: Option<String>,
    /// Written in the same transaction (a disclosure, typically).
    pub audit: Option<AuditEntry>,
    /// Also list the delivery under dead letters (attempts exhausted).
    pub dead_letter: bool,
    /// Apply only while the delivery is in this state (a bounce applies only to `sent`).
    pub expect_status: Option<DeliveryStatus>,
    /// Apply only to a delivery carried by this connector (reports from outside are bound to
    /// the connector they arrived through).
    pub expect_connector: Option<String>,
    /// A transient failure (busy, no answer): when the update moves the delivery to `failed`,
    /// the same transaction queues a new delivery of the same message that retries it from
    /// this time (ms), counting the attempts made — so no crash can lose the retry.
    pub retry_at: Option<i64>,
}

impl DeliveryUpdate {
    pub fn new(status: DeliveryStatus, source: &str) -> Self {
        Self {
            status,
            source: source.to_string(),
            detail: None,
            connector: None,
            provider_ref: None,
            reason: None,
            audit: None,
            dead_letter: false,
            expect_status: None,
            expect_connector: None,
            retry_at: None,
        }
    }
}

/// A delivery the sweeper wants a job for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SweepItem {
    pub id: String,
    pub channel: String,
}

impl Deliveries<'_> {
    pub async fn get(self, id: &str) -> Result<DeliveryRow> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id = $1"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Leases the delivery for one send attempt until `lease_until`, if it is waiting
    /// (`queued`, or `sending` whose lease or retry time has passed). `None`: nothing to do.
    pub async fn claim(self, id: &str, now: i64, lease_until: i64) -> Result<Option<Claimed>> {
        Ok(self
            .claim_many(&[id.to_string()], now, lease_until, &InDoubt::default())
            .await?
            .pop())
    }

    /// Claims many deliveries in one transaction (group commit), with their messages, leased
    /// until `lease_until` (plus `in_doubt.hold_ms` on its channels). Deliveries that are not
    /// waiting are left out.
    pub async fn claim_many(
        self,
        ids: &[String],
        now: i64,
        lease_until: i64,
        in_doubt: &InDoubt,
    ) -> Result<Vec<Claimed>> {
        self.claim_many_on(None, ids, now, lease_until, in_doubt)
            .await
    }

    /// [`Deliveries::claim_many`] for a group-commit writer, on a kept PostgreSQL connection
    /// ([`super::HeldConnections`]).
    pub(super) async fn claim_many_on(
        self,
        held: Option<&super::HeldConnections>,
        ids: &[String],
        now: i64,
        lease_until: i64,
        in_doubt: &InDoubt,
    ) -> Result<Vec<Claimed>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pool = match self.db() {
            super::Db::Postgres(pool) => {
                let mut conn = super::HeldConnections::checkout(held, pool).await?;
                let claimed = claim_many_pg(&mut conn, ids, now, lease_until, in_doubt).await?;
                super::HeldConnections::checkin(held, conn);
                return Ok(claimed);
            }
            super::Db::Sqlite(pool) => pool,
        };
        let mut tx = pool.begin().await?;
        let mut qb = sqlx::QueryBuilder::new("");
        push_claim(&mut qb, ids, now, lease_until, in_doubt);
        let rows: Vec<DeliveryRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            // Nothing waiting (duplicate or late jobs); dropping `tx` rolls it back.
            return Ok(Vec::new());
        }
        let mut qb = sqlx::QueryBuilder::new(
            "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at) ",
        );
        qb.push_values(rows.iter(), |mut row, d| {
            row.push_bind(d.organization_id.clone())
                .push_bind(d.id.clone())
                .push_bind(DeliveryStatus::Sending.as_str())
                .push_bind(true)
                .push_bind("worker")
                .push_bind(format!("attempt {}", d.attempts))
                .push_bind(now);
        });
        qb.build().execute(&mut *tx).await?;
        let first: Vec<&DeliveryRow> = rows.iter().filter(|d| d.attempts == 1).collect();
        if !first.is_empty() {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO events (organization_id, kind, subject_id, payload, created_at) ",
            );
            qb.push_values(first, |mut row, d| {
                row.push_bind(d.organization_id.clone())
                    .push_bind("delivery.status")
                    .push_bind(d.id.clone())
                    .push_bind(status_payload(d, DeliveryStatus::Sending))
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let mut qb = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE id IN ("
        ));
        let message_ids: Vec<String> = rows.iter().map(|d| d.message_id.clone()).collect();
        super::touch_batch::push_list(&mut qb, &message_ids);
        qb.push(")");
        let messages: Vec<MessageRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
        let listed = push_attachment_listing(&message_ids)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let attachments = by_message(listed);
        let by_id: std::collections::HashMap<String, MessageRow> =
            messages.into_iter().map(|m| (m.id.clone(), m)).collect();
        Ok(rows
            .into_iter()
            .filter_map(|delivery| {
                let message = by_id.get(&delivery.message_id).cloned()?;
                let attachments = attachments.get(&message.id).cloned().unwrap_or_default();
                Some(Claimed {
                    delivery,
                    message,
                    attachments,
                })
            })
            .collect())
    }

    /// Applies a status report if the state machine allows it; the report is recorded in the
    /// history either way. Returns whether the delivery moved.
    pub async fn update(self, id: &str, update: &DeliveryUpdate) -> Result<bool> {
        let mut applied = self
            .update_many(&[(id.to_string(), update.clone())])
            .await?;
        applied.pop().ok_or(StoreError::NotFound)
    }

    /// Applies many status reports in one transaction (group commit). Returns, per report,
    /// whether it moved its delivery; a report for an unknown delivery is `NotFound` when alone,
    /// and skipped (false) in a batch.
    pub async fn update_many(self, updates: &[(String, DeliveryUpdate)]) -> Result<Vec<bool>> {
        self.update_many_on(None, updates).await
    }

    /// [`Deliveries::update_many`] for a group-commit writer, on a kept PostgreSQL connection
    /// ([`super::HeldConnections`]).
    pub(super) async fn update_many_on(
        self,
        held: Option<&super::HeldConnections>,
        updates: &[(String, DeliveryUpdate)],
    ) -> Result<Vec<bool>> {
        let now = now_ms();
        // Per reported status, the statuses it may move a delivery from: exactly
        // `DeliveryStatus::can_move_to`, read backwards (`allowed_from`).
        let apply = |status: DeliveryStatus| {
            let from = status.allowed_from();
            (!from.is_empty()).then(|| {
                sqlx::AssertSqlSafe(format!(
                    "UPDATE deliveries SET status = $2, status_rank = $3, not_before = NULL, updated_at = $4,
                        connector = COALESCE($5, connector), provider_ref = COALESCE($6, provider_ref),
                        reason = COALESCE($7, reason)
                     WHERE id = $1 AND status IN {}
                       AND ($8 IS NULL OR status = $8) AND ($9 IS NULL OR connector = $9)
                     RETURNING {}",
                    status_list(&from),
                    delivery_columns!()
                ))
            })
        };
        // A worker's outcome that lost the race to a faster provider callback still records
        // which connector carried the delivery and the provider's id for it (only where
        // unknown: nothing rewrites them).
        let remember = "UPDATE deliveries SET connector = COALESCE(connector, $2), provider_ref = COALESCE(provider_ref, $3)
             WHERE id = $1 AND (connector IS NULL OR provider_ref IS NULL)";
        // Reports for distinct deliveries move them in one statement; a batch that reports
        // one delivery twice applies its reports in order, one statement each (the second
        // must see the first's result).
        let distinct = {
            let mut seen = std::collections::HashSet::with_capacity(updates.len());
            updates.iter().all(|(id, _)| seen.insert(id.as_str()))
        };
        let batched = updates.len() > 1 && distinct;
        if let super::Db::Postgres(pool) = self.db()
            && distinct
            && one_statement(updates)
        {
            let mut conn = super::HeldConnections::checkout(held, pool).await?;
            let moved = update_many_pg(&mut conn, updates, now).await?;
            // A report alone for an unknown delivery is `NotFound` (it wrote nothing).
            let unknown = match updates {
                [(id, _)] if moved.is_empty() => {
                    sqlx::query_scalar::<_, String>("SELECT id FROM deliveries WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?
                        .is_none()
                }
                _ => false,
            };
            super::HeldConnections::checkin(held, conn);
            if unknown {
                return Err(StoreError::NotFound);
            }
            let mut moved: std::collections::HashMap<String, DeliveryRow> =
                moved.into_iter().map(|row| (row.id.clone(), row)).collect();
            let mut results = Vec::with_capacity(updates.len());
            let mut moved_rows = Vec::with_capacity(moved.len());
            for (id, update) in updates {
                let row = moved.remove(id);
                results.push(row.is_some());
                moved_rows.extend(row.map(|row| (row, update)));
            }
            self.count_moved(&moved_rows);
            return Ok(results);
        }
        let results = super::on_tx!(self.db(), held, |tx| {
            let mut history = Vec::with_capacity(updates.len());
            let mut moved_rows: Vec<(DeliveryRow, &DeliveryUpdate)> = Vec::new();
            let mut results = Vec::with_capacity(updates.len());
            let mut moved_together: std::collections::HashMap<String, DeliveryRow> = if batched {
                push_apply_all(updates, now)
                    .build_query_as::<DeliveryRow>()
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|row| (row.id.clone(), row))
                    .collect()
            } else {
                std::collections::HashMap::new()
            };
            for (id, update) in updates {
                let status = update.status;
                let moved: Option<DeliveryRow> = match apply(status) {
                    _ if batched => moved_together.remove(id),
                    None => None,
                    Some(sql) => {
                        sqlx::query_as(sql)
                            .bind(id)
                            .bind(status.as_str())
                            .bind(status.rank())
                            .bind(now)
                            .bind(&update.connector)
                            .bind(&update.provider_ref)
                            .bind(&update.reason)
                            .bind(update.expect_status.map(|s| s.as_str()))
                            .bind(&update.expect_connector)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                };
                if moved.is_none() && (update.connector.is_some() || update.provider_ref.is_some())
                {
                    sqlx::query(remember)
                        .bind(id)
                        .bind(&update.connector)
                        .bind(&update.provider_ref)
                        .execute(&mut *tx)
                        .await?;
                }
                let organization_id = match &moved {
                    Some(row) => Some(row.organization_id.clone()),
                    None => sqlx::query_as::<_, (String,)>(
                        "SELECT organization_id FROM deliveries WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|(org,)| org),
                };
                let Some(organization_id) = organization_id else {
                    if updates.len() == 1 {
                        tx.rollback().await?;
                        return Err(StoreError::NotFound);
                    }
                    results.push(false);
                    continue;
                };
                let detail = update.detail.clone().or_else(|| update.reason.clone());
                history.push((
                    organization_id,
                    id.clone(),
                    status,
                    moved.is_some(),
                    update.source.clone(),
                    detail,
                ));
                results.push(moved.is_some());
                if let Some(row) = moved {
                    moved_rows.push((row, update));
                }
            }
            if !history.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at) ",
                );
                qb.push_values(
                    history,
                    |mut row, (org, id, status, applied, source, detail)| {
                        row.push_bind(org)
                            .push_bind(id)
                            .push_bind(status.as_str())
                            .push_bind(applied)
                            .push_bind(source)
                            .push_bind(detail)
                            .push_bind(now);
                    },
                );
                qb.build().execute(&mut *tx).await?;
            }
            if !moved_rows.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO events (organization_id, kind, subject_id, payload, created_at) ",
                );
                qb.push_values(moved_rows.iter(), |mut row, (d, update)| {
                    row.push_bind(d.organization_id.clone())
                        .push_bind("delivery.status")
                        .push_bind(d.id.clone())
                        .push_bind(status_payload(d, update.status))
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
            // The disclosures the moved reports carry (a send's, typically), in one statement.
            let audits: Vec<&AuditEntry> = moved_rows
                .iter()
                .filter_map(|(_, update)| update.audit.as_ref())
                .collect();
            for chunk in audits.chunks(super::audit::AUDIT_CHUNK) {
                super::audit::insert_all(chunk.iter().copied(), now)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            for (row, update) in &moved_rows {
                if let Some(retry_at) = update.retry_at
                    && row.status == DeliveryStatus::Failed.as_str()
                {
                    // At most one retry per failed delivery (a replayed report finds it made).
                    let retry_id = new_id("dlv");
                    let inserted = sqlx::query(
                        "INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel, recipient, status,
                            status_rank, attempts, max_attempts, not_before, retry_of, created_at, updated_at)
                         SELECT $1, organization_id, message_id, patient_id, channel, recipient, 'queued', 0, attempts,
                            max_attempts, $2, id, $3, $3
                         FROM deliveries d WHERE id = $4
                           AND NOT EXISTS (SELECT 1 FROM deliveries r WHERE r.retry_of = $4)",
                    )
                    .bind(&retry_id).bind(retry_at).bind(now).bind(&row.id)
                    .execute(&mut *tx).await?.rows_affected();
                    if inserted == 1 {
                        let retry_in = (retry_at - now).max(0) as f64 / 1000.0;
                        let why = update.reason.as_deref().unwrap_or("transient failure");
                        sqlx::query(
                            "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at)
                             VALUES ($1, $2, 'queued', TRUE, 'retry', $3, $4)",
                        )
                        .bind(&row.organization_id).bind(&retry_id)
                        .bind(format!("retry of {} ({why}); first attempt in {retry_in:.1}s", row.id))
                        .bind(now)
                        .execute(&mut *tx).await?;
                    }
                }
                if update.dead_letter {
                    sqlx::query(
                        "INSERT INTO dead_letters (delivery_id, organization_id, channel, attempts, reason, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id) DO NOTHING",
                    )
                    .bind(&row.id).bind(&row.organization_id).bind(&row.channel).bind(row.attempts)
                    .bind(update.reason.as_deref().unwrap_or("attempts exhausted")).bind(now)
                    .execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            self.count_moved(&moved_rows);
            results
        });
        Ok(results)
    }

    /// Counts committed moves (`crate::metrics` and the channels' health: no I/O).
    fn count_moved(&self, moved: &[(DeliveryRow, &DeliveryUpdate)]) {
        let metrics = crate::metrics::metrics();
        for (row, update) in moved {
            metrics.delivery_moved(
                &row.channel,
                row.connector.as_deref(),
                &row.status,
                row.created_at,
            );
            self.store
                .health
                .moved(&row.channel, row.connector.as_deref(), &row.status);
            if update.dead_letter {
                metrics.dead_lettered(&row.channel);
            }
        }
    }

    /// After a transient failure: keep the delivery in `sending` and hold it until `retry_at`.
    pub async fn schedule_retry(self, id: &str, retry_at: i64, reason: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE deliveries SET not_before = $2, enqueued_at = $3, reason = $4, updated_at = $3
                 WHERE id = $1 AND status = 'sending' RETURNING organization_id",
            )
            .bind(id).bind(retry_at).bind(now).bind(reason)
            .fetch_optional(&mut *tx).await?;
            if let Some((organization_id,)) = &row {
                let retry_in = (retry_at - now).max(0) as f64 / 1000.0;
                sqlx::query(
                    "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at)
                     VALUES ($1, $2, 'retry_scheduled', TRUE, 'worker', $3, $4)",
                )
                .bind(organization_id).bind(id).bind(format!("{reason}; next attempt in {retry_in:.1}s")).bind(now)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Puts a claimed delivery back to wait until `not_before` without spending the attempt
    /// its claim counted (a call due in quiet hours waits for the opening).
    pub async fn defer(self, id: &str, not_before: i64, reason: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE deliveries SET not_before = $2, enqueued_at = $3, reason = $4, updated_at = $3,
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END
                 WHERE id = $1 AND status = 'sending' RETURNING organization_id",
            )
            .bind(id).bind(not_before).bind(now).bind(reason)
            .fetch_optional(&mut *tx).await?;
            if let Some((organization_id,)) = &row {
                let wait = (not_before - now).max(0) as f64 / 1000.0;
                sqlx::query(
                    "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at)
                     VALUES ($1, $2, 'retry_scheduled', TRUE, 'worker', $3, $4)",
                )
                .bind(organization_id).bind(id).bind(format!("{reason}; next attempt in {wait:.1}s")).bind(now)
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Notes that a job was pushed for these deliveries.
    pub async fn mark_enqueued(self, ids: &[String], now: i64) -> Result<()> {
        for chunk in ids.chunks(500) {
            let placeholders = (2..chunk.len() + 2)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql =
                format!("UPDATE deliveries SET enqueued_at = $1 WHERE id IN ({placeholders})");
            on_db!(self.db(), |pool| {
                // Audited: only generated placeholders are interpolated.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(now);
                for id in chunk {
                    query = query.bind(id);
                }
                query.execute(pool).await.map(|_| ())
            })?;
        }
        Ok(())
    }

    /// Forgets that jobs were pushed for these deliveries (the push failed): the sweeper will
    /// enqueue them within seconds.
    pub async fn clear_enqueued(self, ids: &[String]) -> Result<()> {
        for id in ids {
            on_db!(self.db(), |pool| sqlx::query(
                "UPDATE deliveries SET enqueued_at = NULL WHERE id = $1 AND status = 'queued'"
            )
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        }
        Ok(())
    }

    /// Queued deliveries enqueued before `before` (a previous run of the daemon), after the
    /// cursor `after_id`, in id order: the start-up recovery pass.
    pub async fn queued_before(
        self,
        before: i64,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<SweepItem>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, channel FROM deliveries
             WHERE status = 'queued' AND enqueued_at < $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(before)
        .bind(after_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
    }

    /// Deliveries that need a (new) job: never enqueued after `unqueued_grace_ms` (past their
    /// `not_before`, for a retry made due later), leases or
    /// retry times that passed more than `grace_ms` ago without a job pushed since, and anything
    /// enqueued but still waiting after `stuck_ms`.
    pub async fn sweep_candidates(
        self,
        now: i64,
        grace_ms: i64,
        stuck_ms: i64,
        limit: i64,
        paused_channels: &[String],
    ) -> Result<Vec<SweepItem>> {
        // Deliveries of a paused channel wait for the resume (which enqueues them).
        let skip: String = (0..paused_channels.len())
            .map(|i| format!(" AND channel <> ${}", i + 5))
            .collect();
        let sql = format!(
            "SELECT id, channel FROM deliveries
             WHERE status IN ('queued', 'sending') AND (
                (enqueued_at IS NULL AND created_at < $1 - $2 AND (not_before IS NULL OR not_before < $1 - $2))
                OR (status = 'sending' AND not_before < $1 - $2 AND (enqueued_at IS NULL OR enqueued_at < not_before))
                OR (enqueued_at < $1 - $3 AND (not_before IS NULL OR not_before < $1 - $3))
             ){skip}
             ORDER BY id LIMIT $4"
        );
        Ok(on_db!(self.db(), |pool| {
            // Audited: only generated placeholders are interpolated.
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now)
                .bind(grace_ms)
                .bind(stuck_ms)
                .bind(limit);
            for channel in paused_channels {
                query = query.bind(channel);
            }
            query.fetch_all(pool).await
        })?)
    }

    pub async fn dead_letters(
        self,
        organization_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT delivery_id, organization_id, channel, attempts, reason, created_at, requeued_at
             FROM dead_letters WHERE ($1 IS NULL OR organization_id = $1) ORDER BY created_at DESC LIMIT $2",
        )
        .bind(organization_id).bind(limit)
        .fetch_all(pool).await
        })?)
    }

    /// Retries a dead-lettered delivery as a new delivery of the same message to the same
    /// recipient (the failed one stays failed: deliveries never move backwards).
    pub async fn requeue_dead_letter(self, delivery_id: &str) -> Result<(String, String)> {
        let old = self.get(delivery_id).await?;
        let new_id = new_id("dlv");
        let now = now_ms();
        on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            let marked = sqlx::query("UPDATE dead_letters SET requeued_at = $2 WHERE delivery_id = $1 AND requeued_at IS NULL")
                .bind(delivery_id).bind(now).execute(&mut *tx).await?.rows_affected();
            if marked == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "not a dead letter, or already requeued".into(),
                ));
            }
            sqlx::query(
                "INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel, recipient, status,
                    status_rank, attempts, max_attempts, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, 0, $7, $8, $8)",
            )
            .bind(&new_id).bind(&old.organization_id).bind(&old.message_id).bind(&old.patient_id)
            .bind(&old.channel).bind(&old.recipient).bind(old.max_attempts).bind(now)
            .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at)
                 VALUES ($1, $2, 'queued', TRUE, 'operator', $3, $4)",
            )
            .bind(&old.organization_id).bind(&new_id).bind(format!("retry of {delivery_id}")).bind(now)
            .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok((new_id, old.channel))
    }
}

/// Appends `UPDATE deliveries … RETURNING` leasing those of `ids` that are waiting, for
/// [`Deliveries::claim_many`].
///
/// Claimable is written as "none of the other statuses". Written as `status IN ('queued',
/// 'sending')`, the claim implied the predicate of the partial index `deliveries_active`, and
/// PostgreSQL, whose statistics trail a burst (they said the backlog was empty while it held
/// 16,000 deliveries), walked the whole backlog in that index and filtered it by id: 15-18 ms
/// a claim of 32, growing with the backlog. The complement implies no partial index, so the
/// ids choose the rows, by primary key.
fn push_claim<DB>(
    qb: &mut sqlx::QueryBuilder<DB>,
    ids: &[String],
    now: i64,
    lease_until: i64,
    in_doubt: &InDoubt,
) where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let not_claimable: Vec<DeliveryStatus> = DeliveryStatus::ALL
        .into_iter()
        .filter(|s| !s.is_claimable())
        .collect();
    qb.push("UPDATE deliveries SET status = ");
    qb.push_bind(DeliveryStatus::Sending.as_str().to_string())
        .push(", status_rank = ")
        .push_bind(DeliveryStatus::Sending.rank());
    qb.push(", attempts = attempts + 1, not_before = ");
    if in_doubt.channels.is_empty() || in_doubt.hold_ms <= 0 {
        qb.push_bind(lease_until);
    } else {
        qb.push("CASE WHEN channel IN (");
        super::touch_batch::push_list(qb, &in_doubt.channels);
        qb.push(") THEN ")
            .push_bind(lease_until.saturating_add(in_doubt.hold_ms))
            .push(" ELSE ")
            .push_bind(lease_until)
            .push(" END");
    }
    qb.push(", updated_at = ").push_bind(now);
    qb.push(" WHERE status NOT IN ")
        .push(status_list(&not_claimable));
    qb.push(" AND (not_before IS NULL OR not_before <= ")
        .push_bind(now);
    qb.push(") AND id IN (");
    super::touch_batch::push_list(qb, ids);
    qb.push(") RETURNING ").push(delivery_columns!());
}

/// A claimed delivery with its message's columns (`m_*`), as [`claim_many_pg`] reads them.
#[derive(sqlx::FromRow)]
struct ClaimedRowPg {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    m_organization_id: String,
    m_thread_id: String,
    m_patient_id: Option<String>,
    m_direction: String,
    m_content: Vec<u8>,
    m_urgent: bool,
    m_part2: bool,
    m_metadata: String,
    m_created_at: i64,
    /// Whether the message has attachments (listed by a second statement only then).
    m_attachments: bool,
}

/// [`Deliveries::claim_many`] on PostgreSQL in one statement, committed by itself: the claim
/// `UPDATE`, its history rows and first attempts' `delivery.status` events as data-modifying
/// `WITH` parts, and the claimed deliveries' messages joined (a second statement lists
/// attachments, only for messages that have some). The transaction it replaced was BEGIN, five
/// statements and COMMIT, each a round trip. The event payload is [`status_payload`]'s text,
/// built in SQL (`store::deliveries::tests::a_postgres_claim_writes_what_sqlite_writes`).
async fn claim_many_pg(
    conn: &mut sqlx::PgConnection,
    ids: &[String],
    now: i64,
    lease_until: i64,
    in_doubt: &InDoubt,
) -> Result<Vec<Claimed>> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("WITH c AS (");
    push_claim(&mut qb, ids, now, lease_until, in_doubt);
    qb.push(
        "), h AS (INSERT INTO delivery_events (organization_id, delivery_id, status, applied,
            source, detail, created_at)
          SELECT organization_id, id, status, TRUE, 'worker', 'attempt ' || attempts, ",
    )
    .push_bind(now)
    .push(
        " FROM c ORDER BY id),
         e AS (INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
          SELECT c.organization_id, 'delivery.status', c.id, ",
    )
    .push(status_payload_sql("c"))
    .push(", ")
    .push_bind(now)
    .push(
        " FROM c WHERE attempts = 1 ORDER BY id)
         SELECT c.id, c.organization_id, c.message_id, c.patient_id, c.channel, c.recipient,
            c.status, c.attempts, c.max_attempts, c.not_before, c.connector, c.provider_ref,
            c.reason, c.created_at, c.updated_at,
            m.organization_id AS m_organization_id, m.thread_id AS m_thread_id,
            m.patient_id AS m_patient_id, m.direction AS m_direction, m.content AS m_content,
            m.urgent AS m_urgent, m.part2 AS m_part2, m.metadata AS m_metadata,
            m.created_at AS m_created_at,
            EXISTS (SELECT 1 FROM attachments a
                     WHERE a.message_id = m.id AND a.organization_id = m.organization_id)
              AS m_attachments
         FROM c JOIN messages m ON m.id = c.message_id",
    );
    let rows: Vec<ClaimedRowPg> = qb.build_query_as().fetch_all(&mut *conn).await?;
    let with_attachments: Vec<String> = rows
        .iter()
        .filter(|r| r.m_attachments)
        .map(|r| r.delivery.message_id.clone())
        .collect();
    let attachments = if with_attachments.is_empty() {
        std::collections::HashMap::new()
    } else {
        by_message(
            push_attachment_listing(&with_attachments)
                .build_query_as()
                .fetch_all(&mut *conn)
                .await?,
        )
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let message = MessageRow {
                id: r.delivery.message_id.clone(),
                organization_id: r.m_organization_id,
                thread_id: r.m_thread_id,
                patient_id: r.m_patient_id,
                direction: r.m_direction,
                content: r.m_content,
                urgent: r.m_urgent,
                part2: r.m_part2,
                metadata: r.m_metadata,
                created_at: r.m_created_at,
            };
            Claimed {
                attachments: attachments.get(&message.id).cloned().unwrap_or_default(),
                delivery: r.delivery,
                message,
            }
        })
        .collect())
}

/// The attachments of these messages (each under its message's organization), in order: the
/// listing a claim reads on both databases.
fn push_attachment_listing<DB>(message_ids: &[String]) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: Default,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new(
        "SELECT a.id, a.message_id, a.filename, a.content_type, a.size_bytes, a.sha256
           FROM attachments a JOIN messages m ON m.id = a.message_id
          WHERE a.organization_id = m.organization_id AND a.message_id IN (",
    );
    super::touch_batch::push_list(&mut qb, message_ids);
    qb.push(") ORDER BY a.message_id, a.position, a.id");
    qb
}

/// [`push_attachment_listing`]'s rows by message id, in their order.
fn by_message(
    listed: Vec<super::AttachmentRow>,
) -> std::collections::HashMap<String, Vec<super::AttachmentRow>> {
    let mut attachments: std::collections::HashMap<String, Vec<super::AttachmentRow>> =
        std::collections::HashMap::new();
    for row in listed {
        attachments
            .entry(row.message_id.clone())
            .or_default()
            .push(row);
    }
    attachments
}

/// One `UPDATE` applying status reports for distinct deliveries, each where the state machine
/// allows it (the same conditions as one report's statement in [`Deliveries::update_many_on`]);
/// returns the rows it moved. The text depends only on the number of reports, so PostgreSQL
/// keeps it prepared per batch size.
fn push_apply_all<DB>(updates: &[(String, DeliveryUpdate)], now: i64) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: Default,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new("WITH ");
    push_report_values(&mut qb, updates);
    qb.push(" ");
    push_apply_from_reports(&mut qb, now);
    qb
}

/// `v (…) AS (VALUES …)`: the reports as rows (`uord` their position in the batch, `udetail`
/// what their history row says).
fn push_report_values<DB>(qb: &mut sqlx::QueryBuilder<DB>, updates: &[(String, DeliveryUpdate)])
where
    DB: sqlx::Database,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<&'t str>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push(
        "v (uid, ustatus, urank, uconnector, uref, ureason, uexpect, uexpect_connector, usource,
            udetail, uord) AS (",
    );
    qb.push_values(updates.iter().zip(0_i64..), |mut row, ((id, u), ord)| {
        row.push_bind(id.as_str())
            .push_bind(u.status.as_str())
            .push_bind(u.status.rank())
            .push_bind(u.connector.as_deref())
            .push_bind(u.provider_ref.as_deref())
            .push_bind(u.reason.as_deref())
            .push_bind(u.expect_status.map(|s| s.as_str()))
            .push_bind(u.expect_connector.as_deref())
            .push_bind(u.source.as_str())
            .push_bind(u.detail.as_deref().or(u.reason.as_deref()))
            .push_bind(ord);
    });
    qb.push(")");
}

/// The `UPDATE` moving each delivery of the reports `v` ([`push_report_values`]) where the
/// state machine allows it, returning the rows it moved.
fn push_apply_from_reports<DB>(qb: &mut sqlx::QueryBuilder<DB>, now: i64)
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    qb.push(
        "UPDATE deliveries SET status = v.ustatus, status_rank = v.urank, not_before = NULL,
            updated_at = ",
    )
    .push_bind(now)
    .push(
        ", connector = COALESCE(v.uconnector, deliveries.connector),
            provider_ref = COALESCE(v.uref, deliveries.provider_ref),
            reason = COALESCE(v.ureason, deliveries.reason)
         FROM v WHERE deliveries.id = v.uid AND CASE v.ustatus",
    );
    for status in DeliveryStatus::ALL {
        let from = status.allowed_from();
        if !from.is_empty() {
            qb.push(format!(
                " WHEN '{}' THEN deliveries.status IN {}",
                status.as_str(),
                status_list(&from)
            ));
        }
    }
    qb.push(concat!(
        " ELSE FALSE END
           AND (v.uexpect IS NULL OR deliveries.status = v.uexpect)
           AND (v.uexpect_connector IS NULL OR deliveries.connector = v.uexpect_connector)
         RETURNING ",
        delivery_columns!()
    ));
}

/// The most reports [`update_many_pg`] writes in one statement (the group commit's batches
/// are smaller); a larger batch takes the transaction.
const REPORTS_PER_STATEMENT: usize = 256;

/// Whether [`update_many_pg`] can write these reports of distinct deliveries (a batch naming
/// one twice applies them in order, in the transaction): few enough, and none that may queue
/// a retry or list a dead letter (those take the transaction, which writes them).
fn one_statement(updates: &[(String, DeliveryUpdate)]) -> bool {
    !updates.is_empty()
        && updates.len() <= REPORTS_PER_STATEMENT
        && updates
            .iter()
            .all(|(_, u)| u.retry_at.is_none() && !u.dead_letter)
}

/// [`Deliveries::update_many`] on PostgreSQL in one statement committed by itself (for
/// [`one_statement`] batches): the moving `UPDATE`, the connector and provider id remembered
/// for reports that did not move their delivery, the history rows of every report of a known
/// delivery, the moved deliveries' `delivery.status` events and the disclosures they carry
/// (audit rows), as data-modifying `WITH` parts, each written in report order. The transaction
/// it replaces was BEGIN, three to four statements and COMMIT
/// (`store::deliveries::tests::a_postgres_status_batch_writes_what_sqlite_writes`). Returns
/// the moved rows.
async fn update_many_pg(
    conn: &mut sqlx::PgConnection,
    updates: &[(String, DeliveryUpdate)],
    now: i64,
) -> Result<Vec<DeliveryRow>> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("WITH ");
    push_report_values(&mut qb, updates);
    qb.push(", u AS (");
    push_apply_from_reports(&mut qb, now);
    qb.push(
        "), r AS (UPDATE deliveries SET connector = COALESCE(deliveries.connector, v.uconnector),
            provider_ref = COALESCE(deliveries.provider_ref, v.uref)
          FROM v WHERE deliveries.id = v.uid
            AND (v.uconnector IS NOT NULL OR v.uref IS NOT NULL)
            AND (deliveries.connector IS NULL OR deliveries.provider_ref IS NULL)
            AND v.uid NOT IN (SELECT id FROM u)),
         h AS (INSERT INTO delivery_events (organization_id, delivery_id, status, applied,
            source, detail, created_at)
          SELECT d.organization_id, v.uid, v.ustatus, v.uid IN (SELECT id FROM u), v.usource,
            v.udetail, ",
    )
    .push_bind(now)
    .push(
        " FROM v JOIN deliveries d ON d.id = v.uid ORDER BY v.uord),
         e AS (INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
          SELECT u.organization_id, 'delivery.status', u.id, ",
    )
    .push(status_payload_sql("u"))
    .push(", ")
    .push_bind(now)
    .push(" FROM u JOIN v ON v.uid = u.id ORDER BY v.uord)");
    let audits: Vec<(i64, &str, &AuditEntry)> = updates
        .iter()
        .zip(0_i64..)
        .filter_map(|((id, u), ord)| u.audit.as_ref().map(|a| (ord, id.as_str(), a)))
        .collect();
    if !audits.is_empty() {
        qb.push(
            ", a AS (INSERT INTO audit_events (organization_id, action, actor, patient_id,
                message_id, delivery_id, channel, recipient, outcome, detail, created_at)
              SELECT x.organization_id, x.action, x.actor, x.patient_id, x.message_id,
                x.delivery_id, x.channel, x.recipient, x.outcome, x.detail, ",
        )
        .push_bind(now)
        .push(" FROM (");
        qb.push_values(audits, |mut row, (ord, id, e)| {
            row.push_bind(ord)
                .push_bind(id)
                .push_bind(e.organization_id.as_str())
                .push_bind(e.action.as_str())
                .push_bind(e.actor.as_str())
                .push_bind(e.patient_id.as_deref())
                .push_bind(e.message_id.as_deref())
                .push_bind(e.delivery_id.as_deref())
                .push_bind(e.channel.as_deref())
                .push_bind(e.recipient.as_deref())
                .push_bind(e.outcome.as_deref())
                .push_bind(e.detail.as_deref());
        });
        qb.push(
            ") x (uord, uid, organization_id, action, actor, patient_id, message_id, delivery_id,
                channel, recipient, outcome, detail)
              WHERE x.uid IN (SELECT id FROM u) ORDER BY x.uord)",
        );
    }
    qb.push(" SELECT * FROM u");
    Ok(qb.build_query_as().fetch_all(&mut *conn).await?)
}

/// [`status_payload`]'s text, built in SQL from the delivery row `t` (its status the one
/// reported): the same keys in the same order.
fn status_payload_sql(t: &str) -> String {
    format!(
        "'{{\"attempts\":' || {t}.attempts || ',\"channel\":' || to_json({t}.channel)::text
            || ',\"delivery_id\":' || to_json({t}.id)::text
            || ',\"message_id\":' || to_json({t}.message_id)::text
            || ',\"status\":' || to_json({t}.status)::text || '}}'"
    )
}

/// `('a', 'b')`: statuses as an SQL list. Only our own names are written (no input).
fn status_list(statuses: &[DeliveryStatus]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

fn status_payload(row: &DeliveryRow, status: DeliveryStatus) -> String {
    serde_json::json!({
        "delivery_id": row.id, "message_id": row.message_id, "channel": row.channel,
        "status": status.as_str(), "attempts": row.attempts,
    })
    .to_string()
}

/// What an operator lists deliveries or dead letters by; every part optional.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub channel: Option<String>,
    pub connector: Option<String>,
    /// Created at or after (unix ms).
    pub since: Option<i64>,
    /// Created before (unix ms).
    pub until: Option<i64>,
}

impl Deliveries<'_> {
    /// A page of the organization's deliveries matching `filter`, newest first, after the
    /// keyset `after` (`(created_at, id)` of the previous page's last row).
    pub async fn page(
        self,
        organization_id: &str,
        filter: &DeliveryFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE organization_id = $1
               AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR channel = $3)
               AND ($4 IS NULL OR connector = $4)
               AND created_at >= $5 AND created_at < $6
               AND ($7 IS NULL OR created_at < $7 OR (created_at = $7 AND id < $8))
             ORDER BY created_at DESC, id DESC LIMIT $9"
        );
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.channel.as_deref())
            .bind(filter.connector.as_deref())
            .bind(filter.since.unwrap_or(0))
            .bind(filter.until.unwrap_or(i64::MAX))
            .bind(after_at)
            .bind(after_id.as_deref())
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// A page of the organization's dead letters (newest first; requeued ones too when
    /// `include_requeued`), after the keyset `after` (`(created_at, delivery_id)`).
    pub async fn dead_letter_page(
        self,
        organization_id: &str,
        filter: &DeliveryFilter,
        include_requeued: bool,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT delivery_id, organization_id, channel, attempts, reason, created_at, requeued_at
             FROM dead_letters WHERE organization_id = $1
               AND ($2 IS NULL OR channel = $2) AND ($3 OR requeued_at IS NULL)
               AND created_at >= $4 AND created_at < $5
               AND ($6 IS NULL OR created_at < $6 OR (created_at = $6 AND delivery_id < $7))
             ORDER BY created_at DESC, delivery_id DESC LIMIT $8"
        )
        .bind(organization_id)
        .bind(filter.channel.as_deref())
        .bind(include_requeued)
        .bind(filter.since.unwrap_or(0))
        .bind(filter.until.unwrap_or(i64::MAX))
        .bind(after_at)
        .bind(after_id.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await
        })?)
    }

    /// How many deliveries are in `status`, all organizations (benchmarks wait on it).
    pub async fn count_in(self, status: DeliveryStatus) -> Result<i64> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = $1"
        )
        .bind(status.as_str())
        .fetch_one(pool)
        .await)?)
    }

    /// When the last delivery in `status` reached it (unix ms, store time), if any: a
    /// benchmark's end, exact however seldom it polls [`Self::count_in`].
    pub async fn last_update_in(self, status: DeliveryStatus) -> Result<Option<i64>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT MAX(updated_at) FROM deliveries WHERE status = $1"
        )
        .bind(status.as_str())
        .fetch_one(pool)
        .await)?)
    }

    /// Milliseconds from acceptance to the last status change of every delivery in `status`,
    /// ascending (the benchmark's latency percentiles).
    pub async fn latencies_ms(self, status: DeliveryStatus) -> Result<Vec<i64>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT updated_at - created_at FROM deliveries WHERE status = $1 ORDER BY 1"
        )
        .bind(status.as_str())
        .fetch_all(pool)
        .await)?)
    }

    /// Per channel: deliveries waiting (queued or sending) and the oldest one's creation time,
    /// for the queue gauges (the partial index `deliveries_active`: the cost follows the queue,
    /// not the table).
    pub async fn waiting(self) -> Result<Vec<(String, i64, Option<i64>)>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
                "SELECT channel, COUNT(*), MIN(created_at) FROM deliveries
                 WHERE status IN ('queued', 'sending') GROUP BY channel ORDER BY channel",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// (channel, status, count) over every delivery: what each scrape of `/metrics` used to
    /// run (benchmarks compare it with the in-memory scrape).
    pub async fn counts(self) -> Result<Vec<(String, String, i64)>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
                "SELECT channel, status, COUNT(*) FROM deliveries GROUP BY channel, status ORDER BY channel, status",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// Benchmarks: `n` copies of delivery `id` (ids `<prefix><i>`), in one statement.
    pub async fn copy_for_bench(self, id: &str, prefix: &str, n: i64) -> Result<u64> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $2)
                 INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel, recipient, status,
                    status_rank, attempts, max_attempts, connector, created_at, updated_at)
                 SELECT $3 || CAST(seq.i AS TEXT), organization_id, message_id, patient_id, channel, recipient,
                    status, status_rank, attempts, max_attempts, connector, created_at, updated_at
                 FROM deliveries, seq WHERE deliveries.id = $1",
            )
            .bind(id)
            .bind(n)
            .bind(prefix)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?)
    }

    /// Dead letters not retried yet, all organizations (the partial index
    /// `dead_letters_waiting`).
    pub async fn dead_letter_count(self) -> Result<i64> {
        let (count,): (i64,) = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT COUNT(*) FROM dead_letters WHERE requeued_at IS NULL",
        )
        .fetch_one(pool)
        .await)?;
        Ok(count)
    }

    /// Deliveries of a connector still `sent` since before `sent_before`, not looked up since
    /// `checked_before`: candidates for reconciliation.
    pub async fn to_reconcile(
        self,
        connector: &str,
        sent_before: i64,
        checked_before: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT id, provider_ref FROM deliveries
             WHERE status = 'sent' AND connector = $1 AND updated_at < $2 AND provider_ref IS NOT NULL
               AND (reconciled_at IS NULL OR reconciled_at < $3)
             ORDER BY updated_at LIMIT $4",
        )
        .bind(connector).bind(sent_before).bind(checked_before).bind(limit)
        .fetch_all(pool).await
        })?)
    }

    pub async fn mark_reconciled(self, delivery_id: &str) -> Result<()> {
        let now = now_ms();
        on_db!(self.db(), |pool| sqlx::query(
            "UPDATE deliveries SET reconciled_at = $2 WHERE id = $1"
        )
        .bind(delivery_id)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The delivery a connector knows by this provider id.
    pub async fn by_provider_ref(
        self,
        connector: &str,
        provider_ref: &str,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id FROM deliveries WHERE connector = $1 AND provider_ref = $2 LIMIT 1",
        )
        .bind(connector)
        .bind(provider_ref)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(id,)| id))
    }
}

impl Deliveries<'_> {
    /// The delivery that retries `failed_id`, if one was made.
    pub async fn retry_of(self, failed_id: &str) -> Result<Option<String>> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id FROM deliveries WHERE retry_of = $1"
        )
        .bind(failed_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|(id,)| id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    /// A provider's status callback finds its delivery by the provider's reference, looked
    /// up in the index that holds only deliveries that have one (most waiting deliveries have
    /// none), also as a prepared statement's generic plan.
    #[tokio::test]
    async fn a_status_callback_finds_its_delivery_through_the_provider_reference_index() {
        let crate::testing::Fixture {
            core,
            org,
            guard,
            dir: _dir,
        } = crate::testing::Fixture::new(true, "refs", "Refs").await;
        let Db::Postgres(pool) = core.store.db() else {
            panic!("a PostgreSQL store");
        };
        crate::testing::execute_each(
            pool,
            &org.id,
            &[
            "INSERT INTO threads (id, organization_id, category, status, created_at, updated_at)
             VALUES ('thr_refs', $1, 'routine', 'open', 0, 0)",
            "INSERT INTO messages (id, organization_id, thread_id, direction, content, created_at)
             VALUES ('msg_refs', $1, 'thr_refs', 'outbound', '\\x00', 0)",
            "INSERT INTO deliveries (id, organization_id, message_id, channel, recipient, status,
                 status_rank, max_attempts, created_at, updated_at, connector, provider_ref)
             SELECT 'dlv_' || n, $1, 'msg_refs', 'sms', '+14155550100',
                    CASE WHEN n % 10 = 0 THEN 'sent' ELSE 'queued' END,
                    CASE WHEN n % 10 = 0 THEN 2 ELSE 0 END, 5, 0, 0, 'twilio',
                    CASE WHEN n % 10 = 0 THEN 'SM' || n END
               FROM generate_series(1, 2000) AS n",
            "ANALYZE deliveries",
            ],
        )
        .await;
        let deliveries = core.store.deliveries();
        assert_eq!(
            deliveries
                .by_provider_ref("twilio", "SM1230")
                .await
                .expect("lookup"),
            Some("dlv_1230".to_string())
        );
        assert_eq!(
            deliveries
                .by_provider_ref("twilio", "SM1231")
                .await
                .expect("lookup"),
            None
        );
        let mut conn = pool.acquire().await.expect("connection");
        let explain = "EXPLAIN (FORMAT JSON) EXECUTE by_ref('twilio', 'SM1230')";
        for sql in [
            "SET plan_cache_mode = force_generic_plan",
            "PREPARE by_ref (text, text) AS
                SELECT id FROM deliveries WHERE connector = $1 AND provider_ref = $2 LIMIT 1",
        ] {
            sqlx::raw_sql(sql).execute(&mut *conn).await.expect(sql);
        }
        let plan: (serde_json::Value,) = sqlx::query_as(explain)
            .fetch_one(&mut *conn)
            .await
            .expect("plan");
        let scans = crate::testing::scans_of(&plan.0, "deliveries");
        assert_eq!(scans.len(), 1, "{}", plan.0);
        assert_eq!(
            scans[0]["Index Name"].as_str(),
            Some("deliveries_provider_ref"),
            "{}",
            plan.0
        );
        // Only the 200 deliveries with a reference are in it.
        let (entries,): (f32,) = sqlx::query_as(
            "SELECT reltuples FROM pg_class WHERE relname = 'deliveries_provider_ref'",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("index size");
        assert_eq!(entries, 200.0);
        drop(conn);
        crate::testing::close(core, guard).await;
    }

    /// An outbound message `id` of `organization_id` opening a routine thread, created at 7.
    fn message(organization_id: &str, id: &str) -> super::super::NewMessage {
        super::super::NewMessage {
            id: id.into(),
            organization_id: organization_id.into(),
            thread_id: new_id("thr"),
            new_thread_category: Some("routine".into()),
            patient_id: None,
            direction: "outbound".into(),
            content: b"sealed elsewhere".to_vec(),
            urgent: false,
            part2: false,
            metadata: "{}".into(),
            created_at: 7,
        }
    }

    /// An SMS delivery to one number under each of `ids`.
    fn sms(ids: &[String]) -> Vec<super::super::NewDelivery> {
        ids.iter()
            .map(|id| super::super::NewDelivery {
                id: id.clone(),
                channel: "sms".into(),
                recipient: "+14155550100".into(),
                max_attempts: 3,
            })
            .collect()
    }

    /// A burst: the statistics were gathered while no delivery waited, then 5,000 came in.
    /// Claiming 32 of them still finds them by id (the primary key), not by walking the
    /// backlog in the partial index of waiting deliveries (which grew with the backlog).
    #[tokio::test]
    async fn a_claim_finds_deliveries_by_id_during_a_burst() {
        let crate::testing::Fixture {
            core,
            org,
            guard,
            dir: _dir,
        } = crate::testing::Fixture::new(true, "burst", "Burst").await;
        let Db::Postgres(pool) = core.store.db() else {
            panic!("a PostgreSQL store");
        };
        crate::testing::execute_each(
            pool,
            &org.id,
            &[
            "INSERT INTO threads (id, organization_id, category, status, created_at, updated_at)
             VALUES ('thr_burst', $1, 'routine', 'open', 0, 0)",
            "INSERT INTO messages (id, organization_id, thread_id, direction, content, created_at)
             VALUES ('msg_burst', $1, 'thr_burst', 'outbound', '\\x00', 0)",
            "INSERT INTO deliveries (id, organization_id, message_id, channel, recipient, status,
                 status_rank, max_attempts, created_at, updated_at)
             SELECT 'dlv_done_' || n, $1, 'msg_burst', 'sms', '+14155550100', 'delivered', 4, 5, 0, 0
               FROM generate_series(1, 200) AS n",
            "ANALYZE deliveries",
            "INSERT INTO deliveries (id, organization_id, message_id, channel, recipient, status,
                 status_rank, max_attempts, created_at, updated_at)
             SELECT 'dlv_wait_' || n, $1, 'msg_burst', 'sms', '+14155550100', 'queued', 0, 5, 0, 0
               FROM generate_series(1, 5000) AS n",
            ],
        )
        .await;
        let ids: Vec<String> = (1..=32).map(|n| format!("dlv_wait_{n}")).collect();
        let mut explain = sqlx::QueryBuilder::new("EXPLAIN (FORMAT JSON) ");
        push_claim(
            &mut explain,
            &ids,
            now_ms(),
            now_ms() + 60_000,
            &InDoubt::default(),
        );
        let plan: (serde_json::Value,) = explain
            .build_query_as()
            .fetch_one(pool)
            .await
            .expect("plan");
        let plan = plan.0.to_string();
        assert!(plan.contains("deliveries_pkey"), "by id: {plan}");
        assert!(
            !plan.contains("deliveries_active"),
            "not the backlog: {plan}"
        );
        crate::testing::close(core, guard).await;
    }

    /// A claim leaves the same rows on both databases (PostgreSQL's is one statement, its event
    /// payload built in SQL): the deliveries leased in `sending` with their messages, one
    /// history row each, and a `delivery.status` event whose payload is [`status_payload`]'s
    /// text for first attempts only. A second claim within the lease takes nothing.
    #[tokio::test]
    async fn a_postgres_claim_writes_what_sqlite_writes() {
        for postgres in [false, true] {
            let crate::testing::Fixture {
                core,
                org,
                guard,
                dir: _dir,
            } = crate::testing::Fixture::new(postgres, "claims", "Claims").await;
            let message_id = new_id("msg");
            let ids: Vec<String> = (0..2).map(|_| new_id("dlv")).collect();
            core.store
                .messages()
                .accept(
                    &super::super::NewMessage {
                        urgent: true,
                        metadata: r#"{"k":"v"}"#.into(),
                        ..message(&org.id, &message_id)
                    },
                    &sms(&ids),
                    None,
                )
                .await
                .expect("accept");
            // The second delivery is a retry (its attempts already counted): no event.
            super::super::on_db!(core.store.db(), |pool| sqlx::query(
                "UPDATE deliveries SET attempts = 1 WHERE id = $1"
            )
            .bind(&ids[1])
            .execute(pool)
            .await
            .map(|_| ()))
            .expect("a retry");
            let now = now_ms();
            let mut claimed = core
                .store
                .deliveries()
                .claim_many(&ids, now, now + 60_000, &InDoubt::default())
                .await
                .expect("claim");
            claimed.sort_by(|a, b| a.delivery.id.cmp(&b.delivery.id));
            let mut expected = ids.clone();
            expected.sort();
            let got: Vec<&str> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
            assert_eq!(got, expected, "postgres: {postgres}");
            for c in &claimed {
                assert_eq!(c.delivery.status, "sending");
                assert_eq!(c.delivery.not_before, Some(now + 60_000));
                assert_eq!(c.message.id, message_id);
                assert_eq!(c.message.organization_id, org.id);
                assert_eq!(c.message.content, b"sealed elsewhere");
                assert!(c.message.urgent && !c.message.part2);
                assert_eq!(c.message.metadata, r#"{"k":"v"}"#);
                assert_eq!(c.message.created_at, 7);
                assert!(c.attachments.is_empty());
            }
            let first = claimed
                .iter()
                .find(|c| c.delivery.id == ids[0])
                .expect("first");
            assert_eq!(first.delivery.attempts, 1);
            let history: Vec<(String, String, bool, String, Option<String>)> =
                super::super::on_db!(core.store.db(), |pool| sqlx::query_as(
                    "SELECT delivery_id, status, applied, source, detail FROM delivery_events
                      WHERE source = 'worker' ORDER BY delivery_id"
                )
                .fetch_all(pool)
                .await)
                .expect("history");
            let wanted: Vec<(String, String, bool, String, Option<String>)> = claimed
                .iter()
                .map(|c| {
                    (
                        c.delivery.id.clone(),
                        "sending".to_string(),
                        true,
                        "worker".to_string(),
                        Some(format!("attempt {}", c.delivery.attempts)),
                    )
                })
                .collect();
            assert_eq!(history, wanted, "postgres: {postgres}");
            let events: Vec<(String, String)> = super::super::on_db!(core.store.db(), |pool| {
                sqlx::query_as(
                    "SELECT subject_id, payload FROM events WHERE kind = 'delivery.status'
                      ORDER BY id",
                )
                .fetch_all(pool)
                .await
            })
            .expect("events");
            // (The accept wrote each delivery's `queued` event.)
            let events: Vec<(String, String)> = events
                .into_iter()
                .filter(|(_, payload)| !payload.contains(r#""status":"queued""#))
                .collect();
            assert_eq!(
                events,
                [(
                    ids[0].clone(),
                    status_payload(&first.delivery, DeliveryStatus::Sending)
                )],
                "postgres: {postgres}"
            );
            let again = core
                .store
                .deliveries()
                .claim_many(&ids, now + 1, now + 60_000, &InDoubt::default())
                .await
                .expect("claim again");
            assert!(again.is_empty(), "leased: nothing to claim");
            crate::testing::close(core, guard).await;
        }
    }

    /// A status batch on PostgreSQL (one statement, `update_many_pg`) writes what the SQLite
    /// transaction writes: the moves the state machine allows, the connector and provider id
    /// remembered for a late report, history rows for every report of a known delivery (an
    /// unknown one is skipped), `delivery.status` events with `status_payload`'s text and the
    /// moved reports' audit rows, in report order.
    #[tokio::test]
    async fn a_postgres_status_batch_writes_what_sqlite_writes() {
        type Snapshot = (
            Vec<bool>,
            Vec<(
                String,
                String,
                Option<String>,
                Option<String>,
                Option<String>,
            )>,
            Vec<(String, String, bool, String, Option<String>)>,
            Vec<(String, String)>,
            Vec<(Option<String>, String, Option<String>)>,
        );
        let mut snapshots: Vec<Snapshot> = Vec::new();
        for postgres in [false, true] {
            let crate::testing::Fixture {
                core,
                org,
                guard,
                dir: _dir,
            } = crate::testing::Fixture::new(postgres, "reports", "Reports").await;
            // Fixed ids, the same on both databases (the snapshot names them).
            let message_id = "msg_batch".to_string();
            let ids: Vec<String> = (0..3).map(|n| format!("dlv_{n}")).collect();
            core.store
                .messages()
                .accept(&message(&org.id, &message_id), &sms(&ids), None)
                .await
                .expect("accept");
            for (id, status) in [
                (&ids[0], "sending"),
                (&ids[1], "sending"),
                (&ids[2], "delivered"),
            ] {
                super::super::on_db!(core.store.db(), |pool| sqlx::query(
                    "UPDATE deliveries SET status = $2, attempts = 1 WHERE id = $1"
                )
                .bind(id)
                .bind(status)
                .execute(pool)
                .await
                .map(|_| ()))
                .expect("status");
            }
            let audit = |delivery: &str| AuditEntry {
                organization_id: org.id.clone(),
                action: "disclose".into(),
                actor: "worker".into(),
                patient_id: None,
                message_id: Some(message_id.clone()),
                delivery_id: Some(delivery.to_string()),
                channel: Some("sms".into()),
                recipient: None,
                outcome: Some("sent".into()),
                detail: None,
            };
            let sent = DeliveryUpdate {
                connector: Some("outbox".into()),
                provider_ref: Some("p0".into()),
                audit: Some(audit(&ids[0])),
                ..DeliveryUpdate::new(DeliveryStatus::Sent, "worker")
            };
            let delivered = DeliveryUpdate {
                reason: Some("handset".into()),
                ..DeliveryUpdate::new(DeliveryStatus::Delivered, "webhook:test")
            };
            // Late: `delivered` does not go back to `sent`, but the carrier is remembered.
            let late = DeliveryUpdate {
                connector: Some("late".into()),
                provider_ref: Some("p2".into()),
                detail: Some("late report".into()),
                audit: Some(audit(&ids[2])),
                ..DeliveryUpdate::new(DeliveryStatus::Sent, "worker")
            };
            let batch = vec![
                (ids[1].clone(), delivered),
                (ids[0].clone(), sent),
                (ids[2].clone(), late),
                (
                    "dlv_unknown".to_string(),
                    DeliveryUpdate::new(DeliveryStatus::Sent, "worker"),
                ),
            ];
            assert!(one_statement(&batch));
            let results = core
                .store
                .deliveries()
                .update_many(&batch)
                .await
                .expect("reports");
            let db = core.store.db();
            let rows = super::super::on_db!(db, |pool| sqlx::query_as(
                "SELECT id, status, connector, provider_ref, reason FROM deliveries ORDER BY id"
            )
            .fetch_all(pool)
            .await)
            .expect("deliveries");
            let history = super::super::on_db!(db, |pool| sqlx::query_as(
                "SELECT delivery_id, status, applied, source, detail FROM delivery_events
                  WHERE status <> 'queued' ORDER BY id"
            )
            .fetch_all(pool)
            .await)
            .expect("history");
            let events: Vec<(String, String)> = super::super::on_db!(db, |pool| sqlx::query_as(
                "SELECT subject_id, payload FROM events
                  WHERE kind = 'delivery.status' AND payload NOT LIKE '%\"queued\"%' ORDER BY id"
            )
            .fetch_all(pool)
            .await)
            .expect("events");
            let audits = super::super::on_db!(db, |pool| sqlx::query_as(
                "SELECT delivery_id, action, outcome FROM audit_events
                  WHERE action = 'disclose' ORDER BY id"
            )
            .fetch_all(pool)
            .await)
            .expect("audits");
            // Payloads are `status_payload`'s text for the moved rows.
            let moved: Vec<DeliveryRow> = super::super::on_db!(db, |pool| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    delivery_columns!(),
                    " FROM deliveries WHERE id IN ('dlv_0', 'dlv_1')"
                ))
                .fetch_all(pool)
                .await
            })
            .expect("moved");
            let payload = |id: &str| {
                let row = moved.iter().find(|r| r.id == id).expect("moved row");
                let status = DeliveryStatus::parse(&row.status).expect("status");
                (id.to_string(), status_payload(row, status))
            };
            assert_eq!(
                events,
                [payload("dlv_1"), payload("dlv_0")],
                "postgres: {postgres}"
            );
            // Reports alone: one that moves, one that may not (recorded), an unknown one.
            let deliveries = core.store.deliveries();
            let alone = DeliveryUpdate::new(DeliveryStatus::Delivered, "webhook:test");
            assert_eq!(deliveries.update("dlv_0", &alone).await.ok(), Some(true));
            assert_eq!(
                deliveries
                    .update("dlv_0", &alone)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(false)
            );
            assert!(matches!(
                deliveries.update("dlv_unknown", &alone).await,
                Err(StoreError::NotFound)
            ));
            let after: Vec<(String, String, bool)> = super::super::on_db!(db, |pool| {
                sqlx::query_as(
                    "SELECT delivery_id, status, applied FROM delivery_events
                      WHERE source = 'webhook:test' ORDER BY id",
                )
                .fetch_all(pool)
                .await
            })
            .expect("history");
            let row = |id: &str, applied| (id.to_string(), "delivered".to_string(), applied);
            assert_eq!(
                after,
                [row("dlv_1", true), row("dlv_0", true), row("dlv_0", false)],
                "postgres: {postgres}"
            );
            crate::testing::close(core, guard).await;
            snapshots.push((results, rows, history, events, audits));
        }
        let (results, rows, history, _, audits) = &snapshots[0];
        assert_eq!(results, &[true, true, false, false]);
        let text = |s: &str| Some(s.to_string());
        assert_eq!(
            rows,
            &[
                (
                    "dlv_0".into(),
                    "sent".into(),
                    text("outbox"),
                    text("p0"),
                    None
                ),
                (
                    "dlv_1".into(),
                    "delivered".into(),
                    None,
                    None,
                    text("handset")
                ),
                (
                    "dlv_2".into(),
                    "delivered".into(),
                    text("late"),
                    text("p2"),
                    None
                ),
            ]
        );
        assert_eq!(
            history,
            &[
                (
                    "dlv_1".into(),
                    "delivered".into(),
                    true,
                    "webhook:test".into(),
                    text("handset")
                ),
                ("dlv_0".into(), "sent".into(), true, "worker".into(), None),
                (
                    "dlv_2".into(),
                    "sent".into(),
                    false,
                    "worker".into(),
                    text("late report")
                ),
            ]
        );
        assert_eq!(audits, &[(text("dlv_0"), "disclose".into(), text("sent"))]);
        assert_eq!(snapshots[0], snapshots[1]);
    }
}
