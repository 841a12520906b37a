//! One `LISTEN` connection per daemon on PostgreSQL, fanned out to everything in the process
//! that waits for a notification: each channel's delivery worker (apalis's insert trigger
//! notifies `apalis::job::insert` with the queue's name) and the followers of the events feed
//! (`switchboard_events`).
//!
//! apalis's own `Pubsub` opens a listener per worker, and every PostgreSQL connection costs
//! its own buffers and, under TLS (`sslmode=prefer` against a server with `ssl = on`, the
//! default), its own OpenSSL context with the system's root store loaded: about 1.8 MB
//! resident each. Eight listeners (seven channels and the feed) were most of PostgreSQL's
//! idle RSS over SQLite's (issue 18).
//!
//! After a lost connection is re-established, every consumer is woken: what was notified
//! meanwhile was missed. While it is down, the workers keep their interval poll
//! (`queue.poll_interval_ms`) and the followers theirs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;

use crate::store::Store;

/// The channel apalis's insert trigger notifies (payload: `{"job_type": <queue>, "id": …}`).
const JOB_INSERT: &str = "apalis::job::insert";
/// The channel the events table's trigger notifies.
const EVENTS: &str = "switchboard_events";

/// A wake-up per queue, shared by the listener and the workers.
#[derive(Clone, Default)]
pub struct QueueWakeups {
    queues: Arc<HashMap<String, watch::Sender<()>>>,
}

impl QueueWakeups {
    /// Wake-ups for these queues (apalis queue names); a notification for another is ignored.
    pub fn new(queues: impl IntoIterator<Item = String>) -> Self {
        Self {
            queues: Arc::new(
                queues
                    .into_iter()
                    .map(|q| (q, watch::Sender::new(())))
                    .collect(),
            ),
        }
    }

    /// A stream that yields each time `queue` is woken (wake-ups between two polls coalesce
    /// into one: a wake-up only makes the worker fetch). Ends never for an unknown queue.
    pub fn subscribe(&self, queue: &str) -> Wakeups {
        let stream = match self.queues.get(queue) {
            Some(sender) => futures::stream::unfold(sender.subscribe(), |mut rx| async move {
                rx.changed().await.ok()?;
                Some(((), rx))
            })
            .boxed(),
            None => futures::stream::pending().boxed(),
        };
        Wakeups(Mutex::new(stream))
    }

    /// Wakes the worker of `queue`, if there is one.
    pub fn wake(&self, queue: &str) {
        if let Some(sender) = self.queues.get(queue) {
            sender.send_replace(());
        }
    }

    /// Wakes every worker.
    pub fn wake_all(&self) {
        for sender in self.queues.values() {
            sender.send_replace(());
        }
    }
}

/// A worker's wake-ups, for `Strategy::stream` (which wants the stream `Sync`).
pub struct Wakeups(Mutex<BoxStream<'static, ()>>);

impl Stream for Wakeups {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_next_unpin(cx)
    }
}

#[derive(Deserialize)]
struct JobInserted {
    job_type: String,
}

/// On PostgreSQL, `LISTEN`s on `apalis::job::insert` and `switchboard_events` on one connection
/// and wakes the queue's worker or the events feed's followers (`Store::wake_event_followers`);
/// after a reconnection it wakes them all. Returns on `shutdown`, or with the error when
/// reconnecting fails (the supervisor starts it again). On SQLite there is nothing to listen to
/// (workers poll, the store's update hook wakes the followers) and this returns at once.
pub async fn listen(
    store: Store,
    wakeups: QueueWakeups,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), sqlx::Error> {
    let Some(mut listener) = store.listener().await? else {
        return Ok(());
    };
    listener.listen_all([JOB_INSERT, EVENTS]).await?;
    // Whatever was notified before this connection listened (a restart of this task) is missed.
    store.wake_event_followers();
    wakeups.wake_all();
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            notification = listener.try_recv() => notification?,
        };
        // `None`: the connection was lost; the next call reconnects and listens again.
        let Some(notification) = notification else {
            tracing::warn!("LISTEN connection lost; reconnecting (waking every consumer)");
            store.wake_event_followers();
            wakeups.wake_all();
            continue;
        };
        match notification.channel() {
            EVENTS => store.wake_event_followers(),
            JOB_INSERT => {
                if let Ok(job) = serde_json::from_str::<JobInserted>(notification.payload()) {
                    wakeups.wake(&job.job_type);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wake_up_reaches_that_queue_only() {
        let wakeups = QueueWakeups::new(["a".to_string(), "b".to_string()]);
        let (mut a, mut b) = (wakeups.subscribe("a"), wakeups.subscribe("b"));
        wakeups.wake("a");
        wakeups.wake("unknown");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), a.next()).await,
            Ok(Some(()))
        );
        assert!(futures::poll!(b.next()).is_pending());
        wakeups.wake_all();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), b.next()).await,
            Ok(Some(()))
        );
    }
}
