//! `Messages::accept_many` on PostgreSQL in one statement committed by itself.
//!
//! A batch of accepts was BEGIN, up to eight multi-row statements (idempotency keys, new
//! threads, touched threads, messages, deliveries, their history, events) and COMMIT: ten
//! round trips, and statement texts that varied with the batch size, so PostgreSQL parsed and
//! planned each anew. Here the rows go in as arrays (`UNNEST`: one text whatever the batch,
//! kept prepared on the connection) and every write is a data-modifying `WITH` part of one
//! statement:
//!
//! - `k` inserts the idempotency keys (`ON CONFLICT DO NOTHING`), and `f` keeps the items
//!   that are fresh: no key, or a key this statement inserted. Everything below writes only
//!   `f`'s messages, so a repeated key writes nothing but its answer.
//! - new threads, existing threads touched to their last message's time (each once, in id
//!   order), messages, deliveries with their `queued` history rows, and the events
//!   (`accept_events`' rows, filtered to `f`'s messages), each in batch order.
//!
//! The foreign keys (a message's thread, a delivery's message) are checked at the end of the
//! statement, so rows inserted by sibling parts satisfy them. A batch with attachments (one
//! large row per statement) keeps the transaction. The answers for repeated keys are read
//! afterwards, in one statement, from the committed keys
//! (`store::messages::tests::a_postgres_accept_writes_what_sqlite_writes`).

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::dialect::column;
use super::messages::{AcceptEvent, AcceptItem, AcceptOutcome, accept_events};
use super::{Result, StoreError};

/// Whether [`accept`] can write these items: none carries attachments.
pub(super) fn one_statement(items: &[AcceptItem]) -> bool {
    items.iter().all(|i| i.attachments.is_empty())
}

/// Accepts `items` (see [`one_statement`]); outcomes in the order of `items`.
pub(super) async fn accept(
    conn: &mut PgConnection,
    items: &[AcceptItem],
) -> Result<Vec<AcceptOutcome>> {
    let mut qb = QueryBuilder::<Postgres>::new("WITH i AS (SELECT * FROM UNNEST(");
    {
        let mut cols = qb.separated(", ");
        cols.push_bind((0..items.len() as i64).collect::<Vec<i64>>());
        cols.push_bind(column(items, |i| i.message.id.as_str()));
        cols.push_bind(column(items, |i| i.message.organization_id.as_str()));
        cols.push_bind(column(items, |i| i.message.thread_id.as_str()));
        cols.push_bind(column(items, |i| i.message.new_thread_category.as_deref()));
        cols.push_bind(column(items, |i| i.message.patient_id.as_deref()));
        cols.push_bind(column(items, |i| i.message.direction.as_str()));
        cols.push_bind(column(items, |i| i.message.content.as_slice()));
        cols.push_bind(column(items, |i| i.message.urgent));
        cols.push_bind(column(items, |i| i.message.part2));
        cols.push_bind(column(items, |i| i.message.metadata.as_str()));
        cols.push_bind(column(items, |i| i.message.created_at));
        cols.push_bind(column(items, |i| {
            i.idempotency.as_ref().map(|(k, _)| k.as_str())
        }));
        cols.push_bind(column(items, |i| {
            i.idempotency.as_ref().map(|(_, h)| h.as_str())
        }));
    }
    qb.push(
        ") AS i (ord, id, organization_id, thread_id, category, patient_id, direction, content,
            urgent, part2, metadata, created_at, ikey, ihash)),
         k AS (INSERT INTO idempotency_keys (organization_id, key, request_hash, message_id,
            created_at)
          SELECT organization_id, ikey, ihash, id, created_at FROM i WHERE ikey IS NOT NULL
          ORDER BY ord
          ON CONFLICT (organization_id, key) DO NOTHING RETURNING message_id),
         f AS (SELECT * FROM i WHERE ikey IS NULL OR id IN (SELECT message_id FROM k)),
         t AS (INSERT INTO threads (id, organization_id, patient_id, category, status,
            created_at, updated_at)
          SELECT thread_id, organization_id, patient_id, category, 'open', created_at,
            created_at FROM f WHERE category IS NOT NULL ORDER BY ord),
         tu AS (UPDATE threads SET updated_at = x.at
          FROM (SELECT DISTINCT ON (thread_id) thread_id, created_at AS at FROM f
                 WHERE category IS NULL ORDER BY thread_id, ord DESC) x
          WHERE threads.id = x.thread_id),
         m AS (INSERT INTO messages (id, organization_id, thread_id, patient_id, direction,
            content, urgent, part2, metadata, created_at)
          SELECT id, organization_id, thread_id, patient_id, direction, content, urgent, part2,
            metadata, created_at FROM f ORDER BY ord),
         dv AS (SELECT * FROM UNNEST(",
    );
    let deliveries: Vec<(&str, &super::NewDelivery)> = items
        .iter()
        .flat_map(|i| i.deliveries.iter().map(|d| (i.message.id.as_str(), d)))
        .collect();
    {
        let mut cols = qb.separated(", ");
        cols.push_bind((0..deliveries.len() as i64).collect::<Vec<i64>>());
        cols.push_bind(column(&deliveries, |(m, _)| *m));
        cols.push_bind(column(&deliveries, |(_, d)| d.id.as_str()));
        cols.push_bind(column(&deliveries, |(_, d)| d.channel.as_str()));
        cols.push_bind(column(&deliveries, |(_, d)| d.recipient.as_str()));
        cols.push_bind(column(&deliveries, |(_, d)| d.max_attempts));
    }
    qb.push(
        ") AS dv (ord, message_id, id, channel, recipient, max_attempts)),
         d AS (INSERT INTO deliveries (id, organization_id, message_id, patient_id, channel,
            recipient, status, status_rank, attempts, max_attempts, enqueued_at, created_at,
            updated_at)
          SELECT dv.id, f.organization_id, f.id, f.patient_id, dv.channel, dv.recipient,
            'queued', 0, 0, dv.max_attempts, f.created_at, f.created_at, f.created_at
          FROM dv JOIN f ON f.id = dv.message_id ORDER BY dv.ord),
         h AS (INSERT INTO delivery_events (organization_id, delivery_id, status, applied,
            source, detail, created_at)
          SELECT f.organization_id, dv.id, 'queued', TRUE, 'api', NULL, f.created_at
          FROM dv JOIN f ON f.id = dv.message_id ORDER BY dv.ord),
         e AS (INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
          SELECT ev.organization_id, ev.kind, ev.subject_id, ev.payload, ev.created_at
          FROM UNNEST(",
    );
    let events: Vec<(&str, AcceptEvent)> = items
        .iter()
        .flat_map(|i| {
            accept_events(&[i])
                .into_iter()
                .map(move |e| (i.message.id.as_str(), e))
        })
        .collect();
    {
        let mut cols = qb.separated(", ");
        cols.push_bind((0..events.len() as i64).collect::<Vec<i64>>());
        cols.push_bind(column(&events, |(m, _)| *m));
        cols.push_bind(column(&events, |(_, e)| e.0.as_str()));
        cols.push_bind(column(&events, |(_, e)| e.1));
        cols.push_bind(column(&events, |(_, e)| e.2.as_str()));
        cols.push_bind(column(&events, |(_, e)| e.3.as_str()));
        cols.push_bind(column(&events, |(_, e)| e.4));
    }
    qb.push(
        ") AS ev (ord, message_id, organization_id, kind, subject_id, payload, created_at)
          WHERE ev.message_id IN (SELECT id FROM f) ORDER BY ev.ord)
         SELECT id FROM f",
    );
    let fresh: HashSet<String> = qb
        .build_query_scalar::<String>()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    // Repeated keys: the first request's hash and message, committed before this statement
    // skipped them.
    let repeated: Vec<&AcceptItem> = items
        .iter()
        .filter(|i| !fresh.contains(&i.message.id))
        .collect();
    let mut seen: HashMap<(String, String), (String, String)> = HashMap::new();
    if !repeated.is_empty() {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT k.organization_id, k.key, k.request_hash, k.message_id
               FROM idempotency_keys k JOIN UNNEST(",
        );
        qb.push_bind(column(&repeated, |i| i.message.organization_id.as_str()))
            .push(", ")
            .push_bind(column(&repeated, |i| {
                i.idempotency.as_ref().map_or("", |(k, _)| k.as_str())
            }))
            .push(") AS q (organization_id, key) USING (organization_id, key)");
        let rows: Vec<(String, String, String, String)> =
            qb.build_query_as().fetch_all(&mut *conn).await?;
        for (organization_id, key, hash, message_id) in rows {
            seen.insert((organization_id, key), (hash, message_id));
        }
    }
    items
        .iter()
        .map(|item| {
            if fresh.contains(&item.message.id) {
                return Ok(AcceptOutcome::Created);
            }
            let (key, hash) = item.idempotency.as_ref().ok_or(StoreError::NotFound)?;
            let (seen_hash, seen_id) = seen
                .get(&(item.message.organization_id.clone(), key.clone()))
                .ok_or(StoreError::NotFound)?;
            Ok(if seen_hash == hash {
                AcceptOutcome::Replayed(seen_id.clone())
            } else {
                AcceptOutcome::KeyReused
            })
        })
        .collect()
}
