//! The sweeper: finds deliveries that are waiting without a job (the daemon died between
//! committing a message and pushing its jobs, a worker died holding a lease, a job row was
//! lost) and pushes a job for each. Duplicate jobs are harmless: only one can claim.
//! Runs at start-up and then every `queue.sweep_interval_secs`, on the one daemon of a fleet
//! that holds the sweeper's lease ([`Sweeper`]).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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

/// The sweeper's lease (`leases` table): one daemon of a fleet sweeps per tick.
pub const LEASE: &str = "sweeper";

/// The sweeper of one daemon: it sweeps while it holds [`LEASE`], and when it takes the lease
/// (at start-up, or over from a daemon that stopped renewing it) it first runs the start-up
/// recovery ([`recover`]), since the jobs of whoever swept before may have died with it.
pub struct Sweeper {
    store: Store,
    queue: JobQueue,
    stuck_after: Duration,
    routes: Routes,
    /// `node:instance`, unique per process run.
    holder: String,
    /// How long a taken lease lasts unrenewed: two intervals, so the holder keeps it from one
    /// pass to the next and another daemon takes over within two intervals of its death.
    ttl_ms: i64,
    holding: bool,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Another daemon holds the lease: nothing done.
    Elsewhere,
    /// Swept: deliveries re-enqueued by the start-up recovery (on taking the lease) and by the
    /// sweep.
    Swept { recovered: usize, swept: usize },
}

impl Sweeper {
    pub fn new(
        store: Store,
        queue: JobQueue,
        interval: Duration,
        stuck_after: Duration,
        routes: Routes,
        holder: String,
    ) -> Self {
        let ttl_ms = i64::try_from(interval.as_millis().saturating_mul(2)).unwrap_or(i64::MAX);
        Self {
            store,
            queue,
            stuck_after,
            routes,
            holder,
            ttl_ms,
            holding: false,
        }
    }

    /// Takes or renews the lease; if held, recovers (when newly taken) and sweeps once.
    pub async fn tick(&mut self) -> Result<Tick, PassError> {
        let taken = self
            .store
            .leases()
            .take(LEASE, &self.holder, self.ttl_ms)
            .await;
        if !matches!(taken, Ok(true)) {
            self.holding = false;
            taken?;
            return Ok(Tick::Elsewhere);
        }
        let recovered = if self.holding {
            0
        } else {
            let n = recover(&self.store, &self.queue, now_ms()).await?;
            self.holding = true;
            n
        };
        let swept = sweep_once(&self.store, &self.queue, self.stuck_after, &self.routes).await?;
        Ok(Tick::Swept { recovered, swept })
    }

    /// Gives the lease up (a clean shutdown), so another daemon, or this one restarted, takes
    /// it at once instead of after its time-to-live.
    pub async fn release(&mut self) {
        if std::mem::take(&mut self.holding)
            && let Err(e) = self.store.leases().release(LEASE, &self.holder).await
        {
            warn!(error = %e, "could not release the sweeper lease; it expires by itself");
        }
    }

    /// Ticks every `interval` until `shutdown` resolves, then releases the lease.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.tick().await {
                Ok(Tick::Elsewhere) => debug!("sweeper lease held by another daemon"),
                Ok(Tick::Swept {
                    recovered: 0,
                    swept: 0,
                }) => debug!("sweep pass: nothing waiting without a job"),
                Ok(Tick::Swept { recovered, swept }) => {
                    if recovered > 0 {
                        info!(
                            deliveries = recovered,
                            "re-enqueued deliveries queued before this daemon took the sweeper lease"
                        );
                    }
                    if swept > 0 {
                        info!(deliveries = swept, "sweeper re-enqueued waiting deliveries");
                    }
                }
                Err(e) => {
                    // Recovery runs again on the next tick that holds the lease.
                    self.holding = false;
                    warn!(error = %e, "sweep failed; the next tick tries again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.release().await;
    }
}
