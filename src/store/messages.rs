//! Threads and messages: accepting an outbound message (message + deliveries + events, one
//! transaction, idempotent per key) and reading message records back.

use super::attachments::{NewAttachment, bind_attachment};
use super::{
    AttachmentRow, DeliveryEventRow, DeliveryRow, FaxRecordRow, MessageRow, Messages, Result,
    StoreError, ThreadRow, on_db,
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

/// One message to accept, with its deliveries and optional idempotency key
/// `(key, request_hash)`.
#[derive(Debug, Clone)]
pub struct AcceptItem {
    pub message: NewMessage,
    pub deliveries: Vec<NewDelivery>,
    /// Written in the same transaction, one row a statement.
    pub attachments: Vec<NewAttachment>,
    pub idempotency: Option<(String, String)>,
}

impl Messages<'_> {
    /// Records a message and its deliveries durably, with their `queued` events, in one
    /// transaction. With an idempotency key a repeat returns the first message instead of
    /// creating another.
    pub async fn accept(
        self,
        message: &NewMessage,
        deliveries: &[NewDelivery],
        idempotency: Option<(&str, &str)>,
    ) -> Result<AcceptOutcome> {
        let item = AcceptItem {
            message: message.clone(),
            deliveries: deliveries.to_vec(),
            attachments: Vec::new(),
            idempotency: idempotency.map(|(k, h)| (k.to_string(), h.to_string())),
        };
        let mut outcomes = self.accept_many(std::slice::from_ref(&item)).await?;
        outcomes.pop().ok_or(StoreError::NotFound)
    }

    /// Accepts many messages in one transaction (group commit): one multi-row statement per
    /// table instead of one statement per row. Outcomes are in the order of `items`.
    pub async fn accept_many(self, items: &[AcceptItem]) -> Result<Vec<AcceptOutcome>> {
        self.accept_many_on(None, items).await
    }

    /// [`Messages::accept_many`] for a group-commit writer, on a kept PostgreSQL connection
    /// ([`super::HeldConnections`]).
    pub(super) async fn accept_many_on(
        self,
        held: Option<&super::HeldConnections>,
        items: &[AcceptItem],
    ) -> Result<Vec<AcceptOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let super::Db::Postgres(pool) = self.db()
            && super::accept_pg::one_statement(items)
        {
            let mut conn = super::HeldConnections::checkout(held, pool).await?;
            let outcomes = super::accept_pg::accept(&mut conn, items).await?;
            super::HeldConnections::checkin(held, conn);
            return Ok(outcomes);
        }
        let mut outcomes: Vec<Option<AcceptOutcome>> = vec![None; items.len()];
        super::on_tx!(self.db(), held, |tx| {
            let keyed: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].idempotency.is_some())
                .collect();
            if !keyed.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO idempotency_keys (organization_id, key, request_hash, message_id, created_at) ",
                );
                qb.push_values(keyed.iter(), |mut row, &i| {
                    let item = &items[i];
                    let (key, hash) = item
                        .idempotency
                        .as_ref()
                        .map(|(k, h)| (k.as_str(), h.as_str()))
                        .unwrap_or_default();
                    row.push_bind(item.message.organization_id.clone())
                        .push_bind(key.to_string())
                        .push_bind(hash.to_string())
                        .push_bind(item.message.id.clone())
                        .push_bind(item.message.created_at);
                });
                qb.push(" ON CONFLICT (organization_id, key) DO NOTHING RETURNING message_id");
                let inserted: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                let inserted: std::collections::HashSet<String> =
                    inserted.into_iter().map(|(id,)| id).collect();
                for &i in &keyed {
                    let item = &items[i];
                    if inserted.contains(&item.message.id) {
                        continue;
                    }
                    let (key, hash) = item
                        .idempotency
                        .as_ref()
                        .map(|(k, h)| (k.as_str(), h.as_str()))
                        .unwrap_or_default();
                    let (seen_hash, seen_id): (String, String) = sqlx::query_as(
                        "SELECT request_hash, message_id FROM idempotency_keys WHERE organization_id = $1 AND key = $2",
                    )
                    .bind(&item.message.organization_id).bind(key).fetch_one(&mut *tx).await?;
                    outcomes[i] = Some(if seen_hash == hash {
                        AcceptOutcome::Replayed(seen_id)
                    } else {
                        AcceptOutcome::KeyReused
                    });
                }
            }
            let fresh: Vec<&AcceptItem> = items
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.is_none())
                .map(|(item, _)| item)
                .collect();
            if !fresh.is_empty() {
                let new_threads: Vec<&NewMessage> = fresh
                    .iter()
                    .map(|i| &i.message)
                    .filter(|m| m.new_thread_category.is_some())
                    .collect();
                if !new_threads.is_empty() {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO threads (id, organization_id, patient_id, category, status, created_at, updated_at) ",
                    );
                    qb.push_values(new_threads, |mut row, m| {
                        row.push_bind(m.thread_id.clone())
                            .push_bind(m.organization_id.clone())
                            .push_bind(m.patient_id.clone())
                            .push_bind(m.new_thread_category.clone())
                            .push_bind("open")
                            .push_bind(m.created_at)
                            .push_bind(m.created_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                // Threads the batch adds to: each touched once, to its last message's time
                // (what one update per message left), in id order (the lock order).
                let mut touched: Vec<(&str, i64)> = Vec::new();
                for m in fresh.iter().map(|i| &i.message) {
                    if m.new_thread_category.is_some() {
                        continue;
                    }
                    match touched.iter_mut().find(|(id, _)| *id == m.thread_id) {
                        Some(entry) => entry.1 = m.created_at,
                        None => touched.push((m.thread_id.as_str(), m.created_at)),
                    }
                }
                touched.sort_unstable_by_key(|(id, _)| *id);
                for chunk in touched.chunks(1_000) {
                    let mut qb = sqlx::QueryBuilder::new("UPDATE threads SET updated_at = CASE id");
                    for (id, at) in chunk {
                        qb.push(" WHEN ")
                            .push_bind(*id)
                            .push(" THEN ")
                            .push_bind(*at);
                    }
                    qb.push(" END WHERE id IN (");
                    let mut ids = qb.separated(", ");
                    for (id, _) in chunk {
                        ids.push_bind(*id);
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO messages (id, organization_id, thread_id, patient_id, direction, content, urgent, part2, metadata, created_at) ",
                );
                qb.push_values(fresh.iter().map(|i| &i.message), |mut row, m| {
                    row.push_bind(m.id.clone())
                        .push_bind(m.organization_id.clone())
                        .push_bind(m.thread_id.clone())
                        .push_bind(m.patient_id.clone())
                        .push_bind(m.direction.clone())
                        .push_bind(m.content.clone())
                        .push_bind(m.urgent)
                        .push_bind(m.part2)
                        .push_bind(m.metadata.clone())
                        .push_bind(m.created_at);
                });
                qb.build().execute(&mut *tx).await?;
                for item in &fresh {
                    for attachment in &item.attachments {
                        bind_attachment!(attachment, item.message)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if fresh.iter().any(|i| !i.attachments.is_empty()) {
                    // The connection's write buffer grew to the largest file: give it back
                    // rather than keep it for the connection's life.
                    sqlx::Connection::shrink_buffers(&mut *tx);
                }

                let deliveries: Vec<(&NewMessage, &NewDelivery)> = fresh
                    .iter()
                    .flat_map(|i| i.deliveries.iter().map(move |d| (&i.message, d)))
                    .collect();
                if !deliveries.is_empty() {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel, recipient, status,
                            status_rank, attempts, max_attempts, enqueued_at, created_at, updated_at) ",
                    );
                    qb.push_values(deliveries.iter(), |mut row, (m, d)| {
                        row.push_bind(d.id.clone())
                            .push_bind(m.organization_id.clone())
                            .push_bind(m.id.clone())
                            .push_bind(m.patient_id.clone())
                            .push_bind(d.channel.clone())
                            .push_bind(d.recipient.clone())
                            .push_bind("queued")
                            .push_bind(0_i64)
                            .push_bind(0_i64)
                            .push_bind(d.max_attempts)
                            .push_bind(m.created_at)
                            .push_bind(m.created_at)
                            .push_bind(m.created_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO delivery_events (organization_id, delivery_id, status, applied, source, detail, created_at) ",
                    );
                    qb.push_values(deliveries.iter(), |mut row, (m, d)| {
                        row.push_bind(m.organization_id.clone())
                            .push_bind(d.id.clone())
                            .push_bind("queued")
                            .push_bind(true)
                            .push_bind("api")
                            .push_bind(None::<String>)
                            .push_bind(m.created_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                let events = accept_events(&fresh);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO events (organization_id, kind, subject_id, payload, created_at) ",
                );
                qb.push_values(events, |mut row, (org, kind, subject, payload, at)| {
                    row.push_bind(org)
                        .push_bind(kind)
                        .push_bind(subject)
                        .push_bind(payload)
                        .push_bind(at);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(AcceptOutcome::Created))
            .collect())
    }

    pub async fn get(self, organization_id: &str, id: &str) -> Result<MessageRow> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE organization_id = $1 AND id = $2"
        );
        on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .ok_or(StoreError::NotFound)
    }

    pub async fn thread(self, organization_id: &str, id: &str) -> Result<ThreadRow> {
        on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, organization_id, patient_id, category, status, created_at FROM threads
             WHERE organization_id = $1 AND id = $2",
        )
        .bind(organization_id)
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    /// The patient's most recently active open thread, if any.
    pub async fn open_thread_of(
        self,
        organization_id: &str,
        patient_id: &str,
    ) -> Result<Option<ThreadRow>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, organization_id, patient_id, category, status, created_at FROM threads
             WHERE organization_id = $1 AND patient_id = $2 AND status = 'open'
             ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(organization_id)
        .bind(patient_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// Messages of a thread, oldest first.
    /// One message of the organization with its deliveries, their history, its attachments
    /// and its fax records, read as one snapshot ([`Self::records`]).
    pub async fn record(self, organization_id: &str, id: &str) -> Result<MessageRecord> {
        let mut records = self
            .records(organization_id, RecordSelect::Message(id))
            .await?;
        records.pop().ok_or(StoreError::NotFound)
    }

    /// A page of a thread's messages (oldest first), each with its rows as [`Self::record`]
    /// reads them, all in one snapshot.
    pub async fn thread_records(
        self,
        organization_id: &str,
        thread_id: &str,
        limit: i64,
    ) -> Result<Vec<MessageRecord>> {
        self.records(organization_id, RecordSelect::Thread(thread_id, limit))
            .await
    }

    /// Reads messages and everything shown with them inside one read-only transaction
    /// (PostgreSQL: `REPEATABLE READ`, one snapshot for every statement; SQLite: a WAL read
    /// transaction), so a delivery's status and its history never disagree because a worker
    /// committed between two statements. Five statements whatever the number of messages.
    async fn records(
        self,
        organization_id: &str,
        select: RecordSelect<'_>,
    ) -> Result<Vec<MessageRecord>> {
        let snapshot = self.db().snapshot_read();
        let (messages, deliveries, history, attachments, faxes) = on_db!(self.db(), |pool| {
            let mut tx = pool.begin().await?;
            if let Some(sql) = snapshot {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            let messages: Vec<MessageRow> = match select {
                RecordSelect::Message(id) => {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        message_columns!(),
                        " FROM messages WHERE organization_id = $1 AND id = $2"
                    ))
                    .bind(organization_id)
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?
                }
                RecordSelect::Thread(thread_id, limit) => {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        message_columns!(),
                        " FROM messages WHERE organization_id = $1 AND thread_id = $2 \
                         ORDER BY created_at, id LIMIT $3"
                    ))
                    .bind(organization_id)
                    .bind(thread_id)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?
                }
            };
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            // $1 is the organization in every statement below; the message ids follow. The
            // statements are assembled from this fixed text and numbered placeholders only.
            let ids = (2..messages.len() + 2)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let deliveries_sql = format!(
                "SELECT {} FROM deliveries WHERE organization_id = $1 AND message_id IN ({ids}) \
                 ORDER BY created_at, id",
                delivery_columns!()
            );
            let mut query = sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(deliveries_sql))
                .bind(organization_id);
            for m in &messages {
                query = query.bind(&m.id);
            }
            let deliveries = query.fetch_all(&mut *tx).await?;
            let history_sql = format!(
                "SELECT e.delivery_id, e.status, e.applied, e.source, e.detail, e.created_at \
                 FROM delivery_events e JOIN deliveries d ON d.id = e.delivery_id \
                 WHERE d.organization_id = $1 AND d.message_id IN ({ids}) ORDER BY e.id"
            );
            let mut query = sqlx::query_as::<_, DeliveryEventRow>(sqlx::AssertSqlSafe(history_sql))
                .bind(organization_id);
            for m in &messages {
                query = query.bind(&m.id);
            }
            let history = query.fetch_all(&mut *tx).await?;
            let attachments_sql = format!(
                "SELECT id, message_id, filename, content_type, size_bytes, sha256 \
                 FROM attachments WHERE organization_id = $1 AND message_id IN ({ids}) \
                 ORDER BY position, id"
            );
            let mut query =
                sqlx::query_as::<_, AttachmentRow>(sqlx::AssertSqlSafe(attachments_sql))
                    .bind(organization_id);
            for m in &messages {
                query = query.bind(&m.id);
            }
            let attachments = query.fetch_all(&mut *tx).await?;
            let faxes = if deliveries
                .iter()
                .any(|d| d.channel == crate::domain::Channel::Fax.as_str())
            {
                let faxes_sql = format!(
                    "SELECT f.provider, f.direction, f.provider_id, f.organization_id, \
                        f.delivery_id, f.inbound_item_id, f.pages, f.pages_submitted, \
                        f.provider_status, f.reason, f.created_at, f.updated_at \
                     FROM fax_records f JOIN deliveries d ON d.id = f.delivery_id \
                     WHERE d.organization_id = $1 AND d.message_id IN ({ids}) \
                       AND f.direction = 'outbound'"
                );
                let mut query = sqlx::query_as::<_, FaxRecordRow>(sqlx::AssertSqlSafe(faxes_sql))
                    .bind(organization_id);
                for m in &messages {
                    query = query.bind(&m.id);
                }
                query.fetch_all(&mut *tx).await?
            } else {
                Vec::new()
            };
            tx.commit().await?;
            (messages, deliveries, history, attachments, faxes)
        });
        Ok(group_records(
            messages,
            deliveries,
            history,
            attachments,
            faxes,
        ))
    }
}

/// Which messages [`Messages::records`] reads.
#[derive(Debug, Clone, Copy)]
enum RecordSelect<'a> {
    Message(&'a str),
    /// A thread's first `limit` messages.
    Thread(&'a str, i64),
}

/// A message's rows as the message view shows them, read together (one snapshot).
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub message: MessageRow,
    /// In creation order.
    pub deliveries: Vec<DeliveryRow>,
    /// Every delivery's status history, oldest first.
    pub history: Vec<DeliveryEventRow>,
    pub attachments: Vec<AttachmentRow>,
    /// The provider's records of the outbound fax deliveries.
    pub faxes: Vec<FaxRecordRow>,
}

/// Splits rows read for several messages into one record per message, in message order.
fn group_records(
    messages: Vec<MessageRow>,
    deliveries: Vec<DeliveryRow>,
    history: Vec<DeliveryEventRow>,
    attachments: Vec<AttachmentRow>,
    faxes: Vec<FaxRecordRow>,
) -> Vec<MessageRecord> {
    use std::collections::HashMap;
    let mut records: Vec<MessageRecord> = messages
        .into_iter()
        .map(|message| MessageRecord {
            message,
            deliveries: Vec::new(),
            history: Vec::new(),
            attachments: Vec::new(),
            faxes: Vec::new(),
        })
        .collect();
    let by_message: HashMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.message.id.clone(), i))
        .collect();
    let mut by_delivery: HashMap<String, usize> = HashMap::new();
    for delivery in deliveries {
        if let Some(&i) = by_message.get(&delivery.message_id) {
            by_delivery.insert(delivery.id.clone(), i);
            records[i].deliveries.push(delivery);
        }
    }
    for event in history {
        if let Some(&i) = by_delivery.get(&event.delivery_id) {
            records[i].history.push(event);
        }
    }
    for attachment in attachments {
        if let Some(&i) = by_message.get(&attachment.message_id) {
            records[i].attachments.push(attachment);
        }
    }
    for fax in faxes {
        if let Some(&i) = fax.delivery_id.as_ref().and_then(|d| by_delivery.get(d)) {
            records[i].faxes.push(fax);
        }
    }
    records
}

/// An outbox row for an accepted message: (organization, kind, subject, payload, at).
pub(super) type AcceptEvent = (String, &'static str, String, String, i64);

/// The outbox rows for accepted messages.
pub(super) fn accept_events(items: &[&AcceptItem]) -> Vec<AcceptEvent> {
    let mut events = Vec::new();
    for item in items {
        let m = &item.message;
        let mut accepted = serde_json::json!({
            "message_id": m.id, "thread_id": m.thread_id, "urgent": m.urgent,
            "deliveries": item.deliveries.iter().map(|d| &d.id).collect::<Vec<_>>(),
        });
        // The messaging app's flag, carried for it and never interpreted (docs/events.md).
        if let Some(flag) = serde_json::from_str::<serde_json::Value>(&m.metadata)
            .ok()
            .and_then(|meta| meta.get("chart_documented")?.as_bool())
        {
            accepted["chart_documented"] = flag.into();
        }
        let accepted = accepted.to_string();
        events.push((
            m.organization_id.clone(),
            "message.accepted",
            m.id.clone(),
            accepted.clone(),
            m.created_at,
        ));
        if m.urgent {
            events.push((
                m.organization_id.clone(),
                "urgent_message_sent",
                m.id.clone(),
                accepted,
                m.created_at,
            ));
        }
        for d in &item.deliveries {
            let payload = serde_json::json!({
                "delivery_id": d.id, "message_id": m.id, "channel": d.channel, "status": "queued",
            })
            .to_string();
            events.push((
                m.organization_id.clone(),
                "delivery.status",
                d.id.clone(),
                payload,
                m.created_at,
            ));
        }
    }
    events
}

impl Messages<'_> {
    /// The organization a message belongs to (operator commands, which see all organizations).
    pub async fn organization_of(self, message_id: &str) -> Result<String> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT organization_id FROM messages WHERE id = $1",
        )
        .bind(message_id)
        .fetch_optional(pool)
        .await)?;
        row.map(|(org,)| org).ok_or(StoreError::NotFound)
    }

    /// The patient and thread of one of our messages (a reply's correlation), if it has a
    /// patient.
    pub async fn patient_of(
        self,
        organization_id: &str,
        message_id: &str,
    ) -> Result<Option<(String, String)>> {
        let sql = "SELECT COALESCE(p.merged_into, p.id), t.id FROM messages m \
                   JOIN threads t ON t.id = m.thread_id \
                   JOIN patients p ON p.id = t.patient_id \
                   WHERE m.organization_id = $1 AND m.id = $2";
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(organization_id)
            .bind(message_id)
            .fetch_optional(pool)
            .await)?)
    }

    /// Whether `thread_id` is an open thread of the organization.
    pub async fn thread_is_open(self, organization_id: &str, thread_id: &str) -> Result<bool> {
        let row: Option<(String,)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id FROM threads WHERE organization_id = $1 AND id = $2 AND status = 'open'",
        )
        .bind(organization_id)
        .bind(thread_id)
        .fetch_optional(pool)
        .await)?;
        Ok(row.is_some())
    }

    /// The message an idempotency key accepted, if any.
    pub async fn for_idempotency_key(
        self,
        organization_id: &str,
        key: &str,
    ) -> Result<Option<String>> {
        Ok(on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT message_id FROM idempotency_keys WHERE organization_id = $1 AND key = $2"
        )
        .bind(organization_id)
        .bind(key)
        .fetch_optional(pool)
        .await)?)
    }
}

/// What an operator lists messages by (`GET /v1/messages`); every part optional.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Messages with a delivery in this status.
    pub status: Option<String>,
    /// Messages with a delivery on this channel.
    pub channel: Option<String>,
    /// The patient's gateway id.
    pub patient_id: Option<String>,
    /// Created at or after (unix ms).
    pub since: Option<i64>,
    /// Created before (unix ms).
    pub until: Option<i64>,
}

/// A message as the admin list shows it: ids, direction, flags, time (no content).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageListRow {
    pub id: String,
    pub thread_id: String,
    pub patient_id: Option<String>,
    pub direction: String,
    pub urgent: bool,
    pub part2: bool,
    pub created_at: i64,
}

impl Messages<'_> {
    /// A page of the organization's messages matching `filter`, newest first, after the keyset
    /// `after` (`(created_at, id)`). Indexed: `messages_org_created` and
    /// `messages_patient_created` (migration 0020), deliveries by `deliveries_message`.
    pub async fn page(
        self,
        organization_id: &str,
        filter: &MessageFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<MessageListRow>> {
        let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
        Ok(on_db!(self.db(), |pool| {
            sqlx::query_as(
            "SELECT m.id, m.thread_id, m.patient_id, m.direction, m.urgent, m.part2, m.created_at
             FROM messages m WHERE m.organization_id = $1
               AND ($2 IS NULL OR m.patient_id = $2)
               AND m.created_at >= $3 AND m.created_at < $4
               AND ($5 IS NULL OR m.created_at < $5 OR (m.created_at = $5 AND m.id < $6))
               AND ($7 IS NULL OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status = $7))
               AND ($8 IS NULL OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.channel = $8))
             ORDER BY m.created_at DESC, m.id DESC LIMIT $9",
        )
        .bind(organization_id)
        .bind(filter.patient_id.as_deref())
        .bind(filter.since.unwrap_or(0))
        .bind(filter.until.unwrap_or(i64::MAX))
        .bind(after_at)
        .bind(after_id.as_deref())
        .bind(filter.status.as_deref())
        .bind(filter.channel.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await
        })?)
    }

    /// `(message_id, channel, status)` of every delivery of `message_ids`.
    pub async fn delivery_states_of(
        self,
        message_ids: &[String],
    ) -> Result<Vec<(String, String, String)>> {
        if message_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_db!(self.db(), |pool| {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT message_id, channel, status FROM deliveries WHERE message_id IN (",
            );
            let mut ids = qb.separated(", ");
            for id in message_ids {
                ids.push_bind(id);
            }
            qb.push(") ORDER BY message_id, created_at, id");
            qb.build_query_as().fetch_all(pool).await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(org: &str, thread_id: &str, new_thread: bool, created_at: i64) -> AcceptItem {
        AcceptItem {
            message: NewMessage {
                id: super::super::new_id("msg"),
                organization_id: org.into(),
                thread_id: thread_id.into(),
                new_thread_category: new_thread.then(|| "general".into()),
                patient_id: None,
                direction: "outbound".into(),
                content: b"sealed".to_vec(),
                urgent: false,
                part2: false,
                metadata: "{}".into(),
                created_at,
            },
            deliveries: Vec::new(),
            attachments: Vec::new(),
            idempotency: None,
        }
    }

    /// Messages added to existing threads in one batch (two threads, one of them twice, out
    /// of id order) leave each thread at its last message's time, as one update per message
    /// did.
    #[tokio::test]
    async fn a_batch_touches_each_existing_thread_with_its_last_message() {
        for postgres in [false, true] {
            let crate::testing::Fixture {
                core,
                org,
                guard,
                dir: _dir,
            } = crate::testing::Fixture::new(postgres, "threads", "Threads").await;
            let messages = core.store.messages();
            messages
                .accept_many(&[
                    item(&org.id, "thr_b", true, 1),
                    item(&org.id, "thr_a", true, 1),
                ])
                .await
                .expect("threads");
            messages
                .accept_many(&[
                    item(&org.id, "thr_b", false, 30),
                    item(&org.id, "thr_a", false, 20),
                    item(&org.id, "thr_b", false, 10),
                ])
                .await
                .expect("batch");
            let touched: Vec<(String, i64)> = on_db!(core.store.db(), |pool| {
                sqlx::query_as("SELECT id, updated_at FROM threads ORDER BY id")
                    .fetch_all(pool)
                    .await
            })
            .expect("threads");
            assert_eq!(
                touched,
                [("thr_a".to_string(), 20), ("thr_b".to_string(), 10)],
                "postgres: {postgres}"
            );
            crate::testing::close(core, guard).await;
        }
    }

    /// A batch accepted on PostgreSQL (one statement, `accept_pg`) writes what the SQLite
    /// transaction writes, in the same order, and answers the same: new and touched threads,
    /// messages, deliveries with their `queued` history, the events (an urgent message's
    /// included), a key repeated inside the batch replayed, a key committed before replayed
    /// or refused by its request hash.
    #[tokio::test]
    async fn a_postgres_accept_writes_what_sqlite_writes() {
        type Rows = Vec<(String, String, Option<String>, i64)>;
        type Snapshot = (Vec<AcceptOutcome>, Rows, Rows, Rows, Rows, Rows, Rows);
        let mut snapshots: Vec<Snapshot> = Vec::new();
        for postgres in [false, true] {
            let crate::testing::Fixture {
                core,
                org,
                guard,
                dir: _dir,
            } = crate::testing::Fixture::new(postgres, "accepts", "Accepts").await;
            let messages = core.store.messages();
            let with =
                |id: &str, thread: &str, new_thread: bool, at: i64, key: Option<(&str, &str)>| {
                    let mut i = item(&org.id, thread, new_thread, at);
                    i.message.id = id.into();
                    i.idempotency = key.map(|(k, h)| (k.to_string(), h.to_string()));
                    i.deliveries = (0..2)
                        .map(|n| NewDelivery {
                            id: format!("dlv_{id}_{n}"),
                            channel: if n == 0 { "sms" } else { "email" }.into(),
                            recipient: format!("r{n}"),
                            max_attempts: 3,
                        })
                        .collect();
                    i
                };
            let before = messages
                .accept_many(&[with("msg_0", "thr_old", true, 5, Some(("k0", "h0")))])
                .await
                .expect("before");
            assert_eq!(before, [AcceptOutcome::Created]);
            let mut urgent = with("msg_1", "thr_new", true, 10, Some(("k1", "h1")));
            urgent.message.urgent = true;
            urgent.message.metadata = r#"{"chart_documented":true}"#.into();
            let outcomes = messages
                .accept_many(&[
                    urgent,
                    with("msg_2", "thr_old", false, 30, None),
                    with("msg_3", "thr_old", false, 20, None),
                    with("msg_4", "thr_new", false, 40, Some(("k1", "h1"))),
                    with("msg_5", "thr_old", false, 50, Some(("k0", "other"))),
                    with("msg_6", "thr_old", false, 60, Some(("k0", "h0"))),
                ])
                .await
                .expect("batch");
            let db = core.store.db();
            macro_rules! rows {
                ($sql:literal) => {
                    on_db!(db, |pool| sqlx::query_as($sql).fetch_all(pool).await).expect($sql)
                };
            }
            let threads: Rows =
                rows!("SELECT id, status, category, updated_at FROM threads ORDER BY id");
            let stored: Rows =
                rows!("SELECT id, thread_id, metadata, created_at FROM messages ORDER BY id");
            let deliveries: Rows =
                rows!("SELECT id, message_id, recipient, enqueued_at FROM deliveries ORDER BY id");
            let history: Rows = rows!(
                "SELECT delivery_id, status, source, created_at FROM delivery_events ORDER BY id"
            );
            let events: Rows =
                rows!("SELECT kind, subject_id, payload, created_at FROM events ORDER BY id");
            let keys: Rows = rows!(
                "SELECT key, request_hash, message_id, created_at FROM idempotency_keys ORDER BY key"
            );
            crate::testing::close(core, guard).await;
            snapshots.push((outcomes, threads, stored, deliveries, history, events, keys));
        }
        let (outcomes, threads, stored, deliveries, history, events, keys) = &snapshots[0];
        assert_eq!(
            outcomes,
            &[
                AcceptOutcome::Created,
                AcceptOutcome::Created,
                AcceptOutcome::Created,
                AcceptOutcome::Replayed("msg_1".into()),
                AcceptOutcome::KeyReused,
                AcceptOutcome::Replayed("msg_0".into()),
            ]
        );
        // The old thread is touched to its last message's time (msg_3's 20, after msg_2's 30).
        let at: Vec<(&str, i64)> = threads.iter().map(|t| (t.0.as_str(), t.3)).collect();
        assert_eq!(at, [("thr_new", 10), ("thr_old", 20)]);
        let ids: Vec<&str> = stored.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(ids, ["msg_0", "msg_1", "msg_2", "msg_3"]);
        assert_eq!(deliveries.len(), 8);
        assert_eq!(history.len(), 8);
        // Per message: accepted (and urgent), then each delivery's `queued`.
        let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(kinds.len(), 4 * 3 + 1);
        assert_eq!(
            &kinds[3..7],
            [
                "message.accepted",
                "urgent_message_sent",
                "delivery.status",
                "delivery.status"
            ]
        );
        assert!(
            events[3]
                .2
                .as_deref()
                .is_some_and(|p| p.contains(r#""chart_documented":true"#))
        );
        assert_eq!(keys.len(), 2);
        assert_eq!(snapshots[0], snapshots[1]);
    }
}
