//! Job types and the handle that pushes them into the database-backed queue.

use std::collections::HashMap;
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};

use crate::config::QueueConfig;
use crate::domain::Channel;
use crate::store::{Db, Store};

/// Send deliveries of one channel (look each up, claim it, call its channel, record the
/// outcome): one, or a batch accepted or swept together ([`DELIVERIES_PER_JOB`] at most), so
/// the queue's own statements (insert, fetch, lock, ack) are paid per batch, not per delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub delivery_id: String,
    /// The batch's other deliveries (absent from a job of one, as jobs were before batches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<String>,
}

impl DeliveryJob {
    /// Every delivery the job wakes, in order.
    pub fn delivery_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.delivery_id.as_str()).chain(self.more.iter().map(String::as_str))
    }
}

/// The most deliveries one job wakes.
pub const DELIVERIES_PER_JOB: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no queue for channel {0}")]
    UnknownChannel(String),
    /// The queue's storage refused the job (the SQLite or PostgreSQL backend's error).
    #[error("job queue: {0}")]
    Push(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The queue name for a channel's deliveries.
pub fn queue_name(channel: &str) -> String {
    format!("switchboard.deliver.{channel}")
}

/// Per-channel storages, for pushing and for building workers.
#[derive(Clone)]
pub enum JobQueue {
    Sqlite(HashMap<String, SqliteStorage<DeliveryJob>>),
    Postgres(HashMap<String, PostgresStorage<DeliveryJob>>),
}

impl JobQueue {
    pub fn new(store: &Store, config: &QueueConfig) -> Self {
        let heartbeat = Duration::from_secs(10);
        match store.db() {
            Db::Sqlite(pool) => JobQueue::Sqlite(
                Channel::NAMES
                    .iter()
                    .map(|c| {
                        let cfg = apalis_sqlite::Config::default()
                            .queue(queue_name(c))
                            .batch_size(config.batch_size)
                            .heartbeat_interval(heartbeat)
                            .missed_heartbeats(3)
                            .persist_results(false);
                        (c.to_string(), SqliteStorage::new(pool).with_config(cfg))
                    })
                    .collect(),
            ),
            Db::Postgres(pool) => JobQueue::Postgres(
                Channel::NAMES
                    .iter()
                    .map(|c| {
                        let cfg = apalis_postgres::Config::default()
                            .queue(queue_name(c))
                            .batch_size(config.batch_size)
                            .heartbeat_interval(heartbeat)
                            .missed_heartbeats(3)
                            .persist_results(false);
                        (c.to_string(), PostgresStorage::new(pool).with_config(cfg))
                    })
                    .collect(),
            ),
        }
    }

    /// Pushes jobs for `delivery_ids` onto the channel's queue, optionally delayed: one job
    /// per [`DELIVERIES_PER_JOB`] of them.
    pub async fn push(
        &self,
        channel: &str,
        delivery_ids: &[String],
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        if delivery_ids.is_empty() {
            return Ok(());
        }
        let jobs = delivery_ids
            .chunks(DELIVERIES_PER_JOB)
            .map(|batch| DeliveryJob {
                delivery_id: batch[0].clone(),
                more: batch[1..].to_vec(),
            });
        macro_rules! push_into {
            ($map:expr) => {{
                let mut storage = $map
                    .get(channel)
                    .cloned()
                    .ok_or_else(|| QueueError::UnknownChannel(channel.to_string()))?;
                match delay {
                    None => storage
                        .push_bulk(jobs.collect())
                        .await
                        .map_err(|e| QueueError::Push(Box::new(e))),
                    Some(delay) => {
                        for job in jobs {
                            storage
                                .push_task(TaskBuilder::new(job).run_after(delay).build())
                                .await
                                .map_err(|e| QueueError::Push(Box::new(e)))?;
                        }
                        Ok(())
                    }
                }
            }};
        }
        match self {
            JobQueue::Sqlite(map) => push_into!(map),
            JobQueue::Postgres(map) => push_into!(map),
        }
    }
}

/// Pushes the jobs of freshly accepted deliveries (see [`crate::store::AfterAccept`]). The
/// deliveries were recorded as enqueued in their accept transaction; a failed push clears that
/// mark so the sweeper enqueues them within seconds, and a crash before the push is covered by
/// the sweeper's start-up pass. Nothing is lost either way.
pub struct Enqueuer {
    pub queue: JobQueue,
    pub store: Store,
}

impl crate::store::AfterAccept for Enqueuer {
    fn enqueue(
        &self,
        deliveries: Vec<(String, String)>,
    ) -> futures::future::BoxFuture<'static, ()> {
        let (queue, store) = (self.queue.clone(), self.store.clone());
        Box::pin(async move {
            let mut by_channel: std::collections::BTreeMap<String, Vec<String>> =
                Default::default();
            for (channel, id) in deliveries {
                by_channel.entry(channel).or_default().push(id);
            }
            for (channel, ids) in by_channel {
                if let Err(e) = queue.push(&channel, &ids, None).await {
                    tracing::warn!(error = %e, channel, "enqueue failed; the sweeper will retry");
                    if let Err(e) = store.deliveries().clear_enqueued(&ids).await {
                        tracing::warn!(error = %e, "could not clear the enqueued mark; the sweeper will find them later");
                    }
                }
            }
        })
    }
}
