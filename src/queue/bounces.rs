//! Applies email bounces to the store: the [`BounceSink`] the bounce pollers report to, and
//! starting one poller per SMTP connector with a bounce mailbox.
//!
//! A bounce moves the delivery to `failed` through the normal, monotonic outcome path
//! (`Store::update_delivery`: `sent → failed` applies, a terminal delivery stays as it is) and
//! writes a `delivery_events` row either way, with source `dsn`.
//!
//! Whoever can mail the bounce mailbox can write anything into it, so a DSN names a delivery
//! only through its reference token (a keyed token, not the id), and applies only to a
//! delivery that is `sent` and was carried by the SMTP connector whose mailbox it came from.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::debug;

use crate::channels::email::{BounceSink, bounce_mailboxes, poll_bounces};
use crate::config::Config;
use crate::crypto::Keyring;
use crate::domain::DeliveryStatus;
use crate::store::{DeliveryUpdate, Store, StoreError};
use crate::supervise::Supervisor;

/// The store as a bounce sink.
pub struct StoreBounces {
    pub store: Store,
    /// Resolves reference tokens to delivery ids.
    pub keyring: Keyring,
}

#[async_trait::async_trait]
impl BounceSink for StoreBounces {
    async fn record_bounce(
        &self,
        connector: &str,
        candidates: &[String],
        reason: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        let ids = candidates
            .iter()
            .flat_map(|token| self.keyring.delivery_ids_for_token(token));
        for id in ids {
            let delivery = match self.store.delivery(&id).await {
                Ok(delivery) => delivery,
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(Box::new(e)),
            };
            if delivery.connector.as_deref() != Some(connector)
                || delivery.status != DeliveryStatus::Sent.as_str()
            {
                debug!(delivery_id = %id, connector, "bounce for a delivery not sent by this connector; ignored");
                continue;
            }
            let mut update = DeliveryUpdate::new(DeliveryStatus::Failed, "dsn");
            update.reason = Some(format!("bounced: {reason}"));
            update.expect_status = Some(DeliveryStatus::Sent);
            update.expect_connector = Some(connector.to_string());
            match self.store.update_delivery(&id, &update).await {
                Ok(_) => return Ok(Some(id)),
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(None)
    }
}

/// Starts a supervised poller (`bounces:<connector>`) for every SMTP connector with
/// `bounces`; they stop on the supervisor's shutdown.
pub fn spawn(
    config: &Config,
    store: &Store,
    keyring: &Keyring,
    supervisor: &Supervisor,
) -> Vec<JoinHandle<()>> {
    let sink: Arc<dyn BounceSink> = Arc::new(StoreBounces {
        store: store.clone(),
        keyring: keyring.clone(),
    });
    bounce_mailboxes(config)
        .into_iter()
        .map(|b| {
            let sink = sink.clone();
            supervisor.spawn(format!("bounces:{}", b.connector), move |stop| {
                poll_bounces(
                    b.connector.clone(),
                    b.mailbox.clone(),
                    b.domain.clone(),
                    sink.clone(),
                    stop,
                )
            })
        })
        .collect()
}
