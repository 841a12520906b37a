//! Reconciliation: some carriers never send delivery receipts, so a delivery still `sent`
//! `reconcile_after_secs` after sending is looked up at its provider (manifest `[query]`) and
//! the answer applied like a status callback. Each delivery is looked up at most once per
//! interval. On a fleet, several daemons may look the same delivery up; the update is
//! monotonic, so that is harmless.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::connectors::Connectors;
use crate::deliveries::report_update;
use crate::store::{Store, StoreError, now_ms};

/// How often the reconciler looks for candidates.
const PASS_INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(
    store: Store,
    connectors: Connectors,
    config: std::sync::Arc<Config>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PASS_INTERVAL) => {}
        }
        if let Err(e) = reconcile_once(&store, &connectors, &config).await {
            warn!(error = %e, "reconciliation pass failed");
        }
    }
}

/// One pass over every HTTP connector that can look messages up. Returns how many
/// deliveries moved.
pub async fn reconcile_once(
    store: &Store,
    connectors: &Connectors,
    config: &Config,
) -> Result<usize, StoreError> {
    let mut moved = 0;
    for connector in connectors.http_connectors() {
        let after = connector.reconcile_after_secs();
        if after == 0 || connector.manifest().query.is_none() {
            continue;
        }
        let name = crate::channels::Channel::name(connector.as_ref()).to_string();
        let after_ms = i64::try_from(after.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
        let now = now_ms();
        let due = store
            .deliveries()
            .to_reconcile(&name, now - after_ms, now - after_ms, 100)
            .await?;
        for (delivery_id, provider_ref) in due {
            store.deliveries().mark_reconciled(&delivery_id).await?;
            let report = match connector.lookup(&provider_ref).await {
                Ok(Some(report)) => report,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%delivery_id, connector = %name, error = %e, "lookup failed");
                    continue;
                }
            };
            let Some(mut update) = report_update(&report, &name, &format!("reconcile:{name}"))
            else {
                continue;
            };
            let delivery = store.deliveries().get(&delivery_id).await?;
            update.retry_at = crate::voice::retry_in_window(
                store,
                config,
                &delivery,
                crate::deliveries::transient_retry(config, &delivery, &report),
            )
            .await?;
            let applied = store.deliveries().update(&delivery_id, &update).await?;
            if applied {
                moved += 1;
                info!(%delivery_id, connector = %name, status = update.status.as_str(), "reconciled");
            }
            crate::deliveries::after_report(store, &name, &delivery, &report, &update, applied)
                .await?;
        }
    }
    Ok(moved)
}
