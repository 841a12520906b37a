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
            let delivery = match self.store.deliveries().get(&id).await {
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
            match self.store.deliveries().update(&id, &update).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::SendRequest;

    /// A bounce applies only to a `sent` delivery of the SMTP connector whose mailbox it came
    /// from: a DSN arriving in another connector's mailbox, or naming a delivery that is
    /// already delivered, changes nothing (issue 11, item 3).
    async fn bounces_bind_to_their_connector_and_to_sent(postgres: bool) {
        let crate::testing::Fixture {
            core,
            org,
            guard,
            dir: _dir,
        } = crate::testing::Fixture::new(postgres, "north", "North").await;
        let messages = core.messages();
        let mut deliveries = Vec::new();
        for to in ["a@example.org", "b@example.org"] {
            let request: SendRequest = serde_json::from_value(serde_json::json!({
                "body": "x", "recipients": [{"address": to, "channel": "email"}],
            }))
            .expect("request");
            let accepted = messages
                .accept(&org.id, &request, None)
                .await
                .expect("accept");
            let view = accepted.view.expect("view");
            deliveries.push(view.deliveries[0].id.clone());
        }
        // Both carried by smtp-a; the second one already delivered.
        for (id, status) in [
            (&deliveries[0], DeliveryStatus::Sent),
            (&deliveries[1], DeliveryStatus::Sent),
            (&deliveries[1], DeliveryStatus::Delivered),
        ] {
            let mut update = DeliveryUpdate::new(status, "worker");
            update.connector = Some("smtp-a".into());
            core.store
                .deliveries()
                .update(id, &update)
                .await
                .expect("update");
        }
        let sink = StoreBounces {
            store: core.store.clone(),
            keyring: core.keyring.clone(),
        };
        let token = |id: &str| vec![core.keyring.delivery_token(id).expect("token")];
        let status = |id: String| {
            let store = core.store.clone();
            async move { store.deliveries().get(&id).await.expect("delivery").status }
        };

        // Through smtp-b's mailbox: ignored.
        let applied = sink
            .record_bounce("smtp-b", &token(&deliveries[0]), "550 no such user")
            .await
            .expect("bounce");
        assert_eq!(applied, None);
        assert_eq!(status(deliveries[0].clone()).await, "sent");
        // A delivered delivery: ignored, even through its own connector.
        let applied = sink
            .record_bounce("smtp-a", &token(&deliveries[1]), "550 no such user")
            .await
            .expect("bounce");
        assert_eq!(applied, None);
        assert_eq!(status(deliveries[1].clone()).await, "delivered");
        // Its own connector, sent: failed with the reason.
        let applied = sink
            .record_bounce("smtp-a", &token(&deliveries[0]), "550 no such user")
            .await
            .expect("bounce");
        assert_eq!(applied.as_deref(), Some(deliveries[0].as_str()));
        let failed = core
            .store
            .deliveries()
            .get(&deliveries[0])
            .await
            .expect("delivery");
        assert_eq!(failed.status, "failed");
        assert!(
            failed.reason.as_deref().is_some_and(|r| r.contains("550")),
            "{:?}",
            failed.reason
        );
        crate::testing::close(core, guard).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounces_bind_to_their_connector_and_to_sent_sqlite() {
        bounces_bind_to_their_connector_and_to_sent(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounces_bind_to_their_connector_and_to_sent_postgres() {
        bounces_bind_to_their_connector_and_to_sent(true).await;
    }
}
