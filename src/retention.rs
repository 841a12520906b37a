//! The retention pass: prunes what grows with traffic (`[retention]`) on a schedule, once
//! across a fleet (the `retention` lease), in bounded batches with a pause between them so the
//! daemon's writers (one connection on SQLite) never wait behind it for long.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RetentionConfig;
use crate::store::{Prunable, Store, StoreError, now_ms};

const LEASE: &str = "retention";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Rows pruned per kind by one pass.
pub type PruneReport = BTreeMap<Prunable, u64>;

/// Prunes by the configured ages.
#[derive(Clone)]
pub struct Retention {
    store: Store,
    config: RetentionConfig,
    /// This daemon's name for the lease.
    holder: String,
}

impl Retention {
    pub fn new(store: Store, config: RetentionConfig, holder: String) -> Self {
        Self {
            store,
            config,
            holder,
        }
    }

    /// The configured age of `kind`, days (0: kept forever).
    fn days(&self, kind: Prunable) -> u32 {
        let c = &self.config;
        match kind {
            Prunable::Events => c.events_days,
            Prunable::DeliveryEvents => c.delivery_events_days,
            Prunable::IdempotencyKeys => c.idempotency_keys_days,
            Prunable::Hl7Archive => c.hl7_days,
            Prunable::InboundRaw | Prunable::Orphans => c.inbound_raw_days,
            Prunable::WebhookRecords => c.webhook_records_days,
            Prunable::Jobs => c.jobs_days,
            Prunable::Audit => c.audit_days,
        }
    }

    /// One pass over every kind with an age, as of `now_ms`: batches until a kind has nothing
    /// older left. `pause` is slept between batches (the daemon yields to its writers; the
    /// CLI and tests pass zero).
    pub async fn run_once(&self, now_ms: i64, pause: Duration) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::new();
        for kind in Prunable::ALL {
            let days = self.days(kind);
            if days == 0 {
                continue;
            }
            let cutoff = now_ms - i64::from(days) * DAY_MS;
            let mut total = 0;
            loop {
                let removed = self
                    .store
                    .retention()
                    .prune_batch(kind, cutoff, self.config.batch_size)
                    .await?;
                total += removed;
                if removed < u64::from(self.config.batch_size) {
                    break;
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            if total > 0 {
                report.insert(kind, total);
            }
        }
        Ok(report)
    }

    /// Runs a pass every `interval_secs` while this daemon holds the lease, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.config.interval_secs.max(1));
        // Longer than a pass can take at the batch pause below, so a fleet never runs two.
        let ttl_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        loop {
            match self.store.leases().take(LEASE, &self.holder, ttl_ms).await {
                Ok(true) => match self.run_once(now_ms(), Duration::from_millis(20)).await {
                    Ok(report) if report.is_empty() => {}
                    Ok(report) => {
                        let pruned: Vec<String> = report
                            .iter()
                            .map(|(kind, n)| format!("{}={n}", kind.as_str()))
                            .collect();
                        info!(pruned = %pruned.join(" "), "retention pass");
                    }
                    Err(e) => warn!(error = %e, "retention pass failed; next interval retries"),
                },
                Ok(false) => {}
                Err(e) => warn!(error = %e, "retention lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
