//! Reconciliation: some carriers never send delivery receipts, so a delivery still `sent`
//! `reconcile_after_secs` after sending is looked up at its provider (manifest `[query]`) and
//! the answer applied like a status callback. Each delivery is looked up at most once per
//! interval. On a fleet, several daemons may look the same delivery up; the update is
//! monotonic, so that is harmless.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::channels::Connectors;
use crate::delivery::DeliveryStatus;
use crate::store::{DeliveryUpdate, Store, now_ms};

/// How often the reconciler looks for candidates.
const PASS_INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(store: Store, connectors: Connectors, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PASS_INTERVAL) => {}
        }
        if let Err(e) = reconcile_once(&store, &connectors).await {
            warn!(error = %e, "reconciliation pass failed");
        }
    }
}

/// One pass over every HTTP connector that can look messages up. Returns how many
/// deliveries moved.
pub async fn reconcile_once(store: &Store, connectors: &Connectors) -> Result<usize, String> {
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
            .deliveries_to_reconcile(&name, now - after_ms, now - after_ms, 100)
            .await
            .map_err(|e| e.to_string())?;
        for (delivery_id, provider_ref) in due {
            store
                .mark_reconciled(&delivery_id)
                .await
                .map_err(|e| e.to_string())?;
            let report = match connector.lookup(&provider_ref).await {
                Ok(Some(report)) => report,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%delivery_id, connector = %name, error = %e, "lookup failed");
                    continue;
                }
            };
            let Some(status) = report.status else {
                continue;
            };
            let mut update = DeliveryUpdate::new(status, &format!("reconcile:{name}"));
            update.detail = Some(report.provider_status.clone());
            if status == DeliveryStatus::Failed {
                update.reason = Some(format!(
                    "{name}: {}{}",
                    report.provider_status,
                    report
                        .error
                        .as_deref()
                        .map(|e| format!(", {e}"))
                        .unwrap_or_default()
                ));
            }
            if store
                .update_delivery(&delivery_id, &update)
                .await
                .map_err(|e| e.to_string())?
            {
                moved += 1;
                info!(%delivery_id, connector = %name, status = status.as_str(), "reconciled");
            }
        }
    }
    Ok(moved)
}
