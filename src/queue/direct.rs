//! Applies Direct notifications and expiries to the store: the [`NotificationSink`] the Direct
//! trackers report to, and starting one tracker per `kind = "direct"` connector.
//!
//! Everything goes through the monotonic `Store::update_delivery`: a late or duplicate MDN is
//! written to `delivery_events` with `applied = false` and never moves a delivery backwards.
//! An expiry writes the `delivery.status` event the sender's application sees as the failure
//! notice.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::warn;

use crate::channels::direct::tracker::{Tracker, TrackerKeys};
use crate::channels::direct::{NotificationSink, Tracked, direct_connectors, keys};
use crate::config::Config;
use crate::domain::DeliveryStatus;
use crate::store::{DeliveryUpdate, Store, StoreError};
use crate::supervise::Supervisor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The store as a notification sink.
pub struct StoreNotifications {
    pub store: Store,
}

#[async_trait::async_trait]
impl NotificationSink for StoreNotifications {
    async fn apply(&self, connector: &str, t: &Tracked) -> Result<Option<String>, BoxError> {
        let Some(id) = self
            .store
            .direct()
            .delivery_for(connector, &t.message_id, t.recipient.as_deref())
            .await?
        else {
            return Ok(None);
        };
        let mut update = DeliveryUpdate::new(t.status, t.source);
        update.detail = Some(t.detail.clone());
        update.reason = t.reason.clone();
        match self.store.deliveries().update(&id, &update).await {
            Ok(_) => Ok(Some(id)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(Box::new(e)),
        }
    }

    async fn expire(
        &self,
        connector: &str,
        sent_before: i64,
        processed_before: Option<i64>,
    ) -> Result<usize, BoxError> {
        let overdue = self
            .store
            .direct()
            .overdue(connector, sent_before, processed_before, 500)
            .await?;
        let mut expired = 0;
        for (id, status) in overdue {
            let mut update = DeliveryUpdate::new(DeliveryStatus::Expired, "direct-timeout");
            update.reason = Some(if status == "sent" {
                "no processed MDN within the timeout".into()
            } else {
                "no dispatched MDN within the timeout".into()
            });
            if self.store.deliveries().update(&id, &update).await? {
                expired += 1;
            }
        }
        Ok(expired)
    }
}

/// Starts a tracker for every Direct connector, as two supervised tasks: the mailbox poller
/// (`direct-mailbox:<connector>`, when the connector has a mailbox) and the expiry pass
/// (`direct-expiry:<connector>`); they stop on the supervisor's shutdown.
pub fn spawn(
    config: &Config,
    store: &Store,
    supervisor: &Supervisor,
    messages: Option<Arc<crate::direct::inbound::DirectInbound>>,
) -> Vec<JoinHandle<()>> {
    let sink: Arc<dyn NotificationSink> = Arc::new(StoreNotifications {
        store: store.clone(),
    });
    let mut handles = Vec::new();
    for (name, direct) in direct_connectors(config) {
        let material = match keys::load(direct) {
            Ok(k) => k,
            Err(e) => {
                warn!(connector = %name, error = %e, "direct tracker not started");
                continue;
            }
        };
        let tracker = Arc::new(Tracker {
            connector: name.clone(),
            config: direct.clone(),
            keys: TrackerKeys {
                decryption: material.decryption,
                anchors: material.anchors,
            },
            sink: sink.clone(),
            messages: messages
                .clone()
                .map(|m| m as Arc<dyn crate::channels::direct::tracker::MessageSink>),
        });
        if direct.mailbox.is_some() {
            let tracker = tracker.clone();
            handles.push(
                supervisor.spawn(format!("direct-mailbox:{name}"), move |stop| {
                    let tracker = tracker.clone();
                    async move { tracker.watch_mailbox(&stop).await }
                }),
            );
        }
        handles.push(
            supervisor.spawn(format!("direct-expiry:{name}"), move |stop| {
                let tracker = tracker.clone();
                async move { tracker.expire_regularly(&stop).await }
            }),
        );
    }
    if let Some(inbound) = messages {
        handles.push(supervisor.spawn("direct-inbound".to_string(), move |stop| {
            let inbound = inbound.clone();
            async move { inbound.resume_regularly(&stop).await }
        }));
    }
    handles
}
