//! The sweeper: finds deliveries that are waiting without a job (the daemon died between
//! committing a message and pushing its jobs, a worker died holding a lease, a job row was
//! lost) and pushes a job for each. Duplicate jobs are harmless: only one can claim.
//! Runs at start-up and then every `queue.sweep_interval_secs`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pause::Routes;
use super::{JobQueue, PassError};
use crate::store::{Store, now_ms};

/// How long after creation an un-enqueued delivery counts as lost, milliseconds.
const GRACE_MS: i64 = 5_000;

/// One pass; returns how many deliveries got a new job.
pub async fn sweep_once(
    store: &Store,
    queue: &JobQueue,
    stuck_after: Duration,
    routes: &Routes,
) -> Result<usize, PassError> {
    let now = now_ms();
    let stuck_ms = i64::try_from(stuck_after.as_millis()).unwrap_or(i64::MAX / 2);
    let held = routes.held_channels(&store.pauses().current().await?);
    let candidates = store
        .deliveries()
        .sweep_candidates(now, GRACE_MS, stuck_ms, 5_000, &held)
        .await?;
    let mut by_channel: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in candidates {
        by_channel.entry(item.channel).or_default().push(item.id);
    }
    let mut pushed = 0;
    for (channel, ids) in by_channel {
        queue.push(&channel, &ids, None).await?;
        store.deliveries().mark_enqueued(&ids, now).await?;
        pushed += ids.len();
    }
    Ok(pushed)
}

/// The start-up pass: every delivery still `queued` from before this process started gets a
/// job again (its job may have died with the previous process, or never been pushed). Jobs
/// that did survive make duplicates, which find nothing to claim.
pub async fn recover(store: &Store, queue: &JobQueue, started_at: i64) -> Result<usize, PassError> {
    let mut cursor = String::new();
    let mut pushed = 0;
    loop {
        let batch = store
            .deliveries()
            .queued_before(started_at, &cursor, 1_000)
            .await?;
        let Some(last) = batch.last() else { break };
        cursor = last.id.clone();
        let mut by_channel: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in batch {
            by_channel.entry(item.channel).or_default().push(item.id);
        }
        for (channel, ids) in by_channel {
            queue.push(&channel, &ids, None).await?;
            pushed += ids.len();
        }
    }
    Ok(pushed)
}

/// Sweeps until `shutdown` resolves.
pub async fn run(
    store: Store,
    queue: JobQueue,
    interval: Duration,
    stuck_after: Duration,
    routes: Routes,
    shutdown: CancellationToken,
) {
    match recover(&store, &queue, now_ms()).await {
        Ok(0) => {}
        Ok(n) => info!(
            deliveries = n,
            "re-enqueued deliveries queued by a previous run"
        ),
        Err(e) => warn!(error = %e, "start-up recovery failed; the periodic sweep will catch up"),
    }
    loop {
        match sweep_once(&store, &queue, stuck_after, &routes).await {
            Ok(0) => {}
            Ok(n) => info!(deliveries = n, "sweeper re-enqueued waiting deliveries"),
            Err(e) => warn!(error = %e, "sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
