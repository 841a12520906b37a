//! The webhook dispatcher: follows each endpoint's organization feed and sends what matches.
//!
//! ```text
//!  events feed (commit order) ──fan-out──► webhook_deliveries: pending ──2xx──► delivered
//!   endpoint cursor (tx, id) moves in the      │  ▲   failure: next_attempt_at = now + backoff
//!   same transaction as the rows it covers     │  └── (initial × 3^n, capped)
//!                                              └──── next attempt past give_up_at ──► dead
//!                                      dead ──POST …/deliveries/{id}/retry──► pending (new window)
//! ```
//!
//! - **Durable before sent, at least once.** A delivery row exists (committed) before its
//!   first attempt and becomes `delivered` only after a 2xx; a crash in between sends it
//!   again, with the same `webhook-id` (the row id), so receivers dedupe.
//! - **Nothing skipped across restarts.** Fan-out reads the feed with the feed's own page
//!   query (`Store::events_after`: commit order, nothing handed out behind an open
//!   transaction) from the endpoint's stored cursor, and moves the cursor with the rows.
//!   Two daemons fanning out the same events insert nothing twice (unique per endpoint and
//!   event) and the cursor never moves back.
//! - **Ordered per subject.** A delivery is not attempted while an earlier one (feed order)
//!   of the same endpoint and subject is pending; the subject is the message an event is
//!   about (`payload.message_id`), else its `subject_id`. A dead one no longer holds its
//!   successors back.
//! - **One attempt at a time on a fleet.** An attempt leases its row (`leased_until`) with a
//!   conditional update; a daemon that dies mid-attempt leaves a lease that expires.
//! - **No redirects, bounded time**, and the host checked against `[webhooks] allow_hosts`
//!   again before each attempt (the list may have shrunk since the endpoint was created).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::signature;
use super::{SECRET_CONTEXT, check_url, secs_ms};
use crate::config::Config;
use crate::crypto::Keyring;
use crate::events::EventView;
use crate::store::{
    EventRow, NewWebhookDelivery, Store, StoreError, WebhookDeliveryRow, WebhookEndpointRow, now_ms,
};

/// Deliveries a 2xx acknowledged, attempts that failed, deliveries dead-lettered (this
/// process; `/metrics`).
pub static DELIVERED: AtomicU64 = AtomicU64::new(0);
pub static FAILED_ATTEMPTS: AtomicU64 = AtomicU64::new(0);
pub static DEAD: AtomicU64 = AtomicU64::new(0);

/// The longest the dispatcher sleeps without a wake-up (a missed notification, a retry
/// falling due, another daemon's retry request).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Events read per fan-out page, deliveries claimed per batch.
const PAGE: i64 = 500;
const BATCH: i64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The body of a webhook (Standard Webhooks' recommended shape): the event's kind, when it
/// happened, and the event envelope of the feed as `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    pub data: EventView,
}

/// Follows the feed and delivers to every endpoint of every organization.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    keyring: Keyring,
    config: Arc<Config>,
    client: reqwest::Client,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        keyring: Keyring,
        config: Arc<Config>,
    ) -> Result<Self, reqwest::Error> {
        let timeout = Duration::from_secs(config.webhooks.timeout_secs.max(1));
        let client = crate::http_client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            keyring,
            config,
            client,
        })
    }

    /// Runs passes until `shutdown`: after events are written (woken), when a retry falls
    /// due, and at least every [`IDLE_POLL`]. While no endpoint exists, writes do not wake it
    /// (a busy daemon would read the empty endpoint list once per commit): an endpoint created
    /// through this process wakes it at once, one created through another within the poll.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut written = self.store.events_written();
        let mut endpoints_changed = self.store.endpoints_changed();
        loop {
            written.mark_unchanged();
            endpoints_changed.mark_unchanged();
            let (pause, any_endpoint) = match self.pass_with_endpoints().await {
                Ok(done) => done,
                Err(e) => {
                    warn!(error = %e, "webhook dispatch pass failed");
                    (IDLE_POLL, true)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = written.changed(), if any_endpoint => {}
                _ = endpoints_changed.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass: fan new events out to every endpoint, then send what is due (successors of
    /// what this pass delivered included). Returns how long to wait for the next due retry.
    pub async fn pass(&self) -> Result<Duration, DispatchError> {
        Ok(self.pass_with_endpoints().await?.0)
    }

    /// [`Self::pass`], and whether it found any endpoint.
    async fn pass_with_endpoints(&self) -> Result<(Duration, bool), DispatchError> {
        let endpoints = self.store.webhooks().all_endpoints().await?;
        if endpoints.is_empty() {
            return Ok((IDLE_POLL, false));
        }
        for endpoint in &endpoints {
            self.fan_out(endpoint).await?;
        }
        let by_key: HashMap<(&str, &str), &WebhookEndpointRow> = endpoints
            .iter()
            .map(|e| ((e.organization_id.as_str(), e.id.as_str()), e))
            .collect();
        for _ in 0..100 {
            if !self.send_batch(&by_key).await? {
                break;
            }
        }
        let wait = match self.store.webhooks().next_due().await? {
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            None => IDLE_POLL,
        };
        Ok((wait.min(IDLE_POLL), true))
    }

    /// Records a delivery for every matching event after the endpoint's cursor.
    async fn fan_out(&self, endpoint: &WebhookEndpointRow) -> Result<(), DispatchError> {
        let types: Vec<String> = serde_json::from_str(&endpoint.event_types).unwrap_or_default();
        let window = secs_ms(self.config.webhooks.retry_window_secs);
        let mut cursor = endpoint.cursor();
        loop {
            let page = self
                .store
                .events()
                .after(&endpoint.organization_id, cursor, PAGE)
                .await?;
            let Some(last) = page.events.last() else {
                return Ok(());
            };
            let next = crate::store::EventCursor::after(last);
            let deliveries: Vec<NewWebhookDelivery> = page
                .events
                .iter()
                .filter(|e| types.is_empty() || types.contains(&e.kind))
                .map(|e| NewWebhookDelivery {
                    event_id: e.id,
                    event_tx: e.tx,
                    kind: e.kind.clone(),
                    order_key: order_key(&e.payload, &e.subject_id),
                })
                .collect();
            self.store
                .webhooks()
                .fan_out(endpoint, &deliveries, next, window)
                .await?;
            if !deliveries.is_empty() {
                debug!(organization_id = %endpoint.organization_id, endpoint_id = %endpoint.id, events = deliveries.len(), "webhook deliveries recorded");
            }
            cursor = next;
            if (page.events.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// One batch of due deliveries: leased in one statement (on a fleet another daemon may
    /// hold some), their events read in one query per organization, sent concurrently, the
    /// 2xx recorded together. False when nothing was due.
    async fn send_batch(
        &self,
        endpoints: &HashMap<(&str, &str), &WebhookEndpointRow>,
    ) -> Result<bool, DispatchError> {
        let now = now_ms();
        let due = self.store.webhooks().due_deliveries(now, BATCH).await?;
        if due.is_empty() {
            return Ok(false);
        }
        // An endpoint created after this pass listed them (by another daemon): next pass.
        let due: Vec<WebhookDeliveryRow> = due
            .into_iter()
            .filter(|d| {
                endpoints.contains_key(&(d.organization_id.as_str(), d.endpoint_id.as_str()))
            })
            .collect();
        if due.is_empty() {
            return Ok(false);
        }
        let lease = secs_ms(self.config.webhooks.timeout_secs.max(1) + 30);
        let ids: Vec<String> = due.iter().map(|d| d.id.clone()).collect();
        let claimed: HashSet<String> = self
            .store
            .webhooks()
            .claim_deliveries(&ids, now, now + lease)
            .await?
            .into_iter()
            .collect();
        let due: Vec<WebhookDeliveryRow> = due
            .into_iter()
            .filter(|d| claimed.contains(&d.id))
            .collect();
        let mut events: HashMap<(String, i64), EventRow> = HashMap::new();
        let organizations: HashSet<&str> = due.iter().map(|d| d.organization_id.as_str()).collect();
        for organization_id in organizations {
            let ids: Vec<i64> = due
                .iter()
                .filter(|d| d.organization_id == organization_id)
                .map(|d| d.event_id)
                .collect();
            for row in self.store.events().by_ids(organization_id, &ids).await? {
                events.insert((row.organization_id.clone(), row.id), row);
            }
        }
        let concurrency = self.config.webhooks.concurrency.max(1);
        let outcomes: Vec<(WebhookDeliveryRow, Option<String>, Outcome)> = futures::stream::iter(
            due,
        )
        .map(|d| {
            let endpoint = endpoints
                .get(&(d.organization_id.as_str(), d.endpoint_id.as_str()))
                .copied();
            let event = events.remove(&(d.organization_id.clone(), d.event_id));
            async move {
                let outcome = match (endpoint, event) {
                    (Some(endpoint), Some(event)) => match self.send(endpoint, &d, event).await {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            warn!(webhook_delivery_id = %d.id, error = %e, "webhook not sent");
                            Outcome::Failed(None, "not sent: internal error".into())
                        }
                    },
                    // An endpoint created after this pass listed them: next pass.
                    (None, _) => Outcome::Later,
                    (Some(_), None) => Outcome::Failed(None, "the event is gone".into()),
                };
                (d, endpoint.map(|e| e.id.clone()), outcome)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
        let mut delivered = Vec::new();
        for (delivery, endpoint_id, outcome) in outcomes {
            match outcome {
                Outcome::Delivered(status) => {
                    delivered.push((delivery.id.clone(), i64::from(status)));
                    debug!(webhook_delivery_id = %delivery.id, "webhook delivered");
                }
                Outcome::Later => {}
                Outcome::Failed(status, reason) => {
                    FAILED_ATTEMPTS.fetch_add(1, Ordering::Relaxed);
                    let next = now_ms().saturating_add(self.backoff_ms(delivery.attempts));
                    let dead = self
                        .store
                        .webhooks()
                        .attempt_failed(&delivery.id, status.map(i64::from), &reason, next)
                        .await?;
                    let endpoint_id = endpoint_id.unwrap_or_default();
                    if dead {
                        DEAD.fetch_add(1, Ordering::Relaxed);
                        warn!(webhook_delivery_id = %delivery.id, endpoint_id = %endpoint_id, organization_id = %delivery.organization_id, reason = %reason, "webhook delivery dead-lettered");
                    } else {
                        info!(webhook_delivery_id = %delivery.id, endpoint_id = %endpoint_id, reason = %reason, "webhook attempt failed; will retry");
                    }
                }
            }
        }
        DELIVERED.fetch_add(delivered.len() as u64, Ordering::Relaxed);
        self.store.webhooks().delivered_many(&delivered).await?;
        Ok(true)
    }

    /// The wait after the `attempts`+1-th failure: initial × 3^attempts, capped.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let webhooks = &self.config.webhooks;
        let initial = i64::try_from(webhooks.backoff_initial_ms).unwrap_or(i64::MAX);
        let max = secs_ms(webhooks.backoff_max_secs);
        let factor = 3i64.saturating_pow(u32::try_from(attempts.clamp(0, 40)).unwrap_or(40));
        initial.saturating_mul(factor).min(max).max(1)
    }

    async fn send(
        &self,
        endpoint: &WebhookEndpointRow,
        delivery: &WebhookDeliveryRow,
        event: EventRow,
    ) -> Result<Outcome, SendError> {
        if check_url(&self.config.webhooks, &endpoint.url).is_err() {
            // Never contacted: the operator's allow-list no longer holds the host.
            return Ok(Outcome::Failed(
                None,
                "the host is not in webhooks.allow_hosts".into(),
            ));
        }
        let data = EventView::from_row(event);
        let body = serde_json::to_vec(&WebhookBody {
            kind: data.kind.clone(),
            timestamp: data.at.clone(),
            data,
        })
        .map_err(|e| SendError::Internal(e.to_string()))?;
        let timestamp = now_ms() / 1000;
        let mut signatures = Vec::with_capacity(2);
        let mut secrets = vec![&endpoint.secret];
        if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_until)
            && until > now_ms()
        {
            secrets.push(previous);
        }
        for sealed in secrets {
            let secret = self.keyring.open(sealed, SECRET_CONTEXT)?;
            let key = std::str::from_utf8(&secret)
                .ok()
                .and_then(signature::secret_key)
                .ok_or_else(|| SendError::Internal("stored secret unreadable".into()))?;
            signatures.push(
                signature::sign(&key, &delivery.id, timestamp, &body)
                    .map_err(|e| SendError::Internal(e.to_string()))?,
            );
        }
        let response = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(body)
            .send()
            .await;
        Ok(match response {
            Ok(response) if response.status().is_success() => {
                Outcome::Delivered(response.status().as_u16())
            }
            Ok(response) => {
                let status = response.status().as_u16();
                Outcome::Failed(Some(status), format!("HTTP {status}"))
            }
            Err(e) if e.is_timeout() => Outcome::Failed(None, "timeout".into()),
            Err(e) if e.is_connect() => Outcome::Failed(None, "connection failed".into()),
            Err(_) => Outcome::Failed(None, "request failed".into()),
        })
    }
}

enum Outcome {
    Delivered(u16),
    Failed(Option<u16>, String),
    /// Not attempted (its endpoint is not in this pass's list): the lease expires, and a
    /// later pass sends it.
    Later,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("{0}")]
    Internal(String),
}

/// What orders an event among its endpoint's deliveries: the message it is about, else its
/// subject.
fn order_key(payload: &str, subject_id: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|p| p.get("message_id")?.as_str().map(str::to_string))
        .unwrap_or_else(|| subject_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::order_key;

    #[test]
    fn a_message_orders_its_deliveries_events() {
        assert_eq!(
            order_key(r#"{"delivery_id":"dlv_1","message_id":"msg_1"}"#, "dlv_1"),
            "msg_1"
        );
        assert_eq!(
            order_key(r#"{"inbound_item_id":"inb_1"}"#, "inb_1"),
            "inb_1"
        );
        assert_eq!(order_key("not json", "x"), "x");
    }
}
