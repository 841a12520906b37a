//! Applies email bounces to the store: the [`BounceSink`] the bounce pollers report to, and
//! starting one poller per SMTP connector with a bounce mailbox.
//!
//! A bounce moves the delivery to `failed` through the normal, monotonic outcome path
//! (`Store::update_delivery`: `sent → failed` applies, a terminal delivery stays as it is) and
//! writes a `delivery_events` row either way, with source `dsn`.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::channels::email::{BounceSink, bounce_mailboxes, poll_bounces};
use crate::config::Config;
use crate::delivery::DeliveryStatus;
use crate::store::{DeliveryUpdate, Store, StoreError};
use crate::supervise::Supervisor;

/// The store as a bounce sink.
pub struct StoreBounces {
    pub store: Store,
}

#[async_trait::async_trait]
impl BounceSink for StoreBounces {
    async fn record_bounce(
        &self,
        candidates: &[String],
        reason: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
        for id in candidates {
            let mut update = DeliveryUpdate::new(DeliveryStatus::Failed, "dsn");
            update.reason = Some(format!("bounced: {reason}"));
            match self.store.update_delivery(id, &update).await {
                Ok(_) => return Ok(Some(id.clone())),
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(None)
    }
}

/// Starts a supervised poller (`bounces:<connector>`) for every SMTP connector with
/// `bounces`; they stop on the supervisor's shutdown.
pub fn spawn(config: &Config, store: &Store, supervisor: &Supervisor) -> Vec<JoinHandle<()>> {
    let sink: Arc<dyn BounceSink> = Arc::new(StoreBounces {
        store: store.clone(),
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
