//! The MDNs we owe senders of inbound Direct messages (Implementation Guide for Delivery
//! Notification in Direct v1.0, RFC 8098): an outbox in the store (`direct_mdns`) and one
//! supervised sender per `sign`-mode Direct connector (`direct-mdn:<connector>`) that builds
//! each MDN, signs and encrypts it like any outbound Direct message and submits it through the
//! connector's HISP SMTP (the steps are `channels::direct::DirectChannel`'s, shared).
//!
//! ```text
//!  enqueue ──► queued ──claim (not_before = now + lease)──► attempt ──250──► sent
//!   (once per      ▲                                           │
//!    item and      └──── 4xx, connection, discovery down ──────┤  not_before = now + backoff
//!    disposition)        (attempts < 12)                       │
//!                        5xx, no certificate, attempt 12 ──────┴──► failed (reason)
//! ```
//!
//! - **Durable before it is owed.** [`MdnOutbox::enqueue`] returns once the row is committed;
//!   the caller (inbound processing) enqueues in the step that earned the MDN.
//! - **Once per item and disposition, ever.** The unique index `direct_mdns_once` makes a
//!   second enqueue (a release, a reprocess, a crash and replay) a no-op: `Ok(false)`.
//! - **One attempt at a time on a fleet.** A sender claims a due row with a conditional update
//!   (`status = 'queued' AND not_before <= now`) that moves `not_before` to the end of a lease
//!   ([`LEASE`]); two daemons on one PostgreSQL never send the same row at once. A daemon that
//!   dies mid-attempt leaves the row to be taken again when the lease ends (at least once).
//! - **Retries.** Transient failures (SMTP 4xx, a connection or timeout, discovery that could
//!   not answer) are retried after [`backoff`] (10 s, 30 s, 1, 2, 5, 10, 30 min, then hourly);
//!   the 12th failed attempt ([`MAX_ATTEMPTS`]) is final. Permanent ones (SMTP 5xx, no usable
//!   certificate) are `failed` at once. The reason is the provider's text with addresses
//!   redacted, shown on the inbound item.
//! - **Same message each attempt.** The MDN's Message-ID is chosen at enqueue and kept.
//! - **Certificates.** The row holds the verified signer certificate(s) of the received
//!   message (PEM); those usable for encryption are encrypted to. None given (or none usable):
//!   the connector's discovery finds the sender's, as for an outbound message.
//! - **Never a request for an MDN.** An MDN carries no `Disposition-Notification-To`.
//!
//! `edge`-mode connectors queue nothing (the HISP signs, encrypts and answers itself); nor does
//! a connector that is not Direct. Logs carry the MDN id and the inbound item id, never an
//! address. Counters (this process) are on `/metrics` as `switchboard_direct_mdns_total`.
//!
//! Not here: deciding which MDNs are owed (inbound processing), building the report
//! (`switchboard_mail::mdn`, re-exported below), the MDNs we receive (`channels::direct::tracker`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openssl::x509::X509;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use switchboard_direct::mdn::*;

use crate::channels::ChannelError;
use crate::channels::direct::{DirectChannel, LogId, direct_connectors};
use crate::config::{Config, ConnectorConfig, DirectMode};
use crate::direct::{KeyPurpose, load_certs, policy};
use crate::store::{MdnRow, NewMdnRow, Store, StoreError, new_id, now_ms};
use crate::supervise::Supervisor;

/// Attempts before an MDN is given up as `failed`.
pub const MAX_ATTEMPTS: i32 = 12;
/// How long one attempt holds its row (discovery, sealing and SMTP are each bounded by their
/// own timeouts, far below this).
pub const LEASE: Duration = Duration::from_secs(300);
/// The longest a sender sleeps without a wake-up (an MDN queued by another process, another
/// daemon's lease running out).
pub const POLL: Duration = Duration::from_secs(3);

/// MDNs the HISP accepted, attempts that failed and will be retried, MDNs given up (this
/// process; `/metrics`).
pub static SENT: AtomicU64 = AtomicU64::new(0);
pub static RETRIED: AtomicU64 = AtomicU64::new(0);
pub static FAILED: AtomicU64 = AtomicU64::new(0);

/// The delay before attempt `attempts + 1`, after `attempts` failed ones.
pub fn backoff(attempts: i32) -> Duration {
    const STEPS: [u64; 7] = [10, 30, 60, 120, 300, 600, 1800];
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
    Duration::from_secs(STEPS.get(index).copied().unwrap_or(3600))
}

/// What an MDN reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Security processing accepted the message (sent before matching).
    Processed,
    /// Filed or queued as unmatched; with `final_destination` when the sender asked.
    Dispatched,
    /// Filing failed after a processed MDN.
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Processed => "processed",
            Disposition::Dispatched => "dispatched",
            Disposition::Failed => "failed",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "processed" => Some(Disposition::Processed),
            "dispatched" => Some(Disposition::Dispatched),
            "failed" => Some(Disposition::Failed),
            _ => None,
        }
    }

    fn report(self) -> MdnDisposition {
        match self {
            Disposition::Processed => MdnDisposition::Processed,
            Disposition::Dispatched => MdnDisposition::Dispatched,
            Disposition::Failed => MdnDisposition::Failed,
        }
    }
}

/// An MDN owed for an inbound item.
#[derive(Debug, Clone)]
pub struct NewMdn {
    pub organization_id: String,
    pub inbound_item_id: String,
    /// The Direct connector the message arrived through (the MDN leaves through it).
    pub connector: String,
    pub disposition: Disposition,
    /// The original sender's Direct address.
    pub recipient: String,
    /// The received message's Message-ID (with or without brackets).
    pub original_message_id: String,
    /// Dispatched only: add `X-DIRECT-FINAL-DESTINATION-DELIVERY` (the sender asked for it).
    pub final_destination: bool,
    /// The verified signer certificate(s) of the received message; empty: discovery.
    pub recipient_certs: Vec<X509>,
}

/// One MDN of an inbound item, as its view shows it. Times are unix epoch milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MdnView {
    /// `processed`, `dispatched` or `failed`.
    pub disposition: String,
    /// `queued` (waiting for its first or next attempt), `sent` (the HISP accepted it) or
    /// `failed` (refused, or given up after 12 attempts).
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Why the last attempt failed (the HISP's answer, addresses redacted).
    pub reason: Option<String>,
    /// When the HISP accepted it.
    pub sent_at: Option<i64>,
    /// The MDN's own Message-ID (without brackets).
    pub message_id: Option<String>,
}

impl From<MdnRow> for MdnView {
    fn from(row: MdnRow) -> Self {
        Self {
            sent_at: (row.status == "sent").then_some(row.updated_at),
            disposition: row.disposition,
            status: row.status,
            attempts: i64::from(row.attempts),
            reason: row.reason,
            message_id: row.message_id,
        }
    }
}

/// The `mdn` object of an inbound item's view: each disposition's MDN, `null` when none is
/// owed (yet).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MdnStatuses {
    pub processed: Option<MdnView>,
    pub dispatched: Option<MdnView>,
    pub failed: Option<MdnView>,
}

impl From<Vec<MdnView>> for MdnStatuses {
    fn from(views: Vec<MdnView>) -> Self {
        let mut out = Self::default();
        for view in views {
            match Disposition::parse(&view.disposition) {
                Some(Disposition::Processed) => out.processed = Some(view),
                Some(Disposition::Dispatched) => out.dispatched = Some(view),
                Some(Disposition::Failed) => out.failed = Some(view),
                None => {}
            }
        }
        out
    }
}

/// The outbox: queues MDNs and wakes the connector's sender. Cheap to clone.
#[derive(Clone)]
pub struct MdnOutbox {
    store: Store,
    config: Arc<Config>,
    /// One wake-up per `sign`-mode Direct connector (a stored permit: an enqueue during a
    /// pass is not lost).
    wake: Arc<HashMap<String, Arc<Notify>>>,
}

impl MdnOutbox {
    pub fn new(store: Store, config: Arc<Config>) -> Self {
        let wake = direct_connectors(&config)
            .filter(|(_, d)| d.mode == DirectMode::Sign)
            .map(|(name, _)| (name.clone(), Arc::new(Notify::new())))
            .collect();
        Self {
            store,
            config,
            wake: Arc::new(wake),
        }
    }

    /// Queues an MDN; durable before it returns. `Ok(false)` when this item already has an
    /// MDN of this disposition (never a second), and, with nothing stored, for an `edge`-mode
    /// connector (the HISP answers) or a connector that is not Direct. `NotFound` when the
    /// item is not the organization's.
    pub async fn enqueue(&self, mdn: &NewMdn) -> Result<bool, StoreError> {
        let direct = match self.config.connectors.get(&mdn.connector) {
            Some(ConnectorConfig::Direct(d)) if d.mode == DirectMode::Sign => d,
            _ => {
                debug!(inbound_item_id = %mdn.inbound_item_id, connector = %mdn.connector, "no MDN queued: not a sign-mode Direct connector");
                return Ok(false);
            }
        };
        let mut pem = String::new();
        for cert in &mdn.recipient_certs {
            let bytes = cert
                .to_pem()
                .map_err(|e| StoreError::Conflict(format!("recipient certificate: {e}")))?;
            pem.push_str(&String::from_utf8_lossy(&bytes));
        }
        let mut rnd = [0u8; 16];
        openssl::rand::rand_bytes(&mut rnd)
            .map_err(|e| StoreError::Conflict(format!("random: {e}")))?;
        let message_id = format!(
            "{}@{}",
            crate::direct::mime::hex_string(&rnd),
            crate::channels::direct::message_domain(direct)
        );
        let id = new_id("mdn");
        let fresh = self
            .store
            .direct()
            .insert_mdn(&NewMdnRow {
                id: &id,
                organization_id: &mdn.organization_id,
                inbound_item_id: &mdn.inbound_item_id,
                connector: &mdn.connector,
                disposition: mdn.disposition.as_str(),
                recipient: mdn.recipient.trim(),
                original_message_id: mdn.original_message_id.trim(),
                final_destination: mdn.final_destination
                    && mdn.disposition == Disposition::Dispatched,
                recipient_certs: (!pem.is_empty()).then_some(pem.as_str()),
                message_id: &message_id,
            })
            .await?;
        if fresh {
            info!(mdn_id = %id, inbound_item_id = %mdn.inbound_item_id, disposition = mdn.disposition.as_str(), "MDN queued");
            if let Some(wake) = self.wake.get(&mdn.connector) {
                wake.notify_one();
            }
        } else {
            info!(inbound_item_id = %mdn.inbound_item_id, disposition = mdn.disposition.as_str(), "MDN already queued for this item; not another");
        }
        Ok(fresh)
    }

    /// The MDN statuses of an inbound item, for its view.
    pub async fn of_item(
        &self,
        organization_id: &str,
        item_id: &str,
    ) -> Result<Vec<MdnView>, StoreError> {
        Ok(self
            .store
            .direct()
            .mdns_of_item(organization_id, item_id)
            .await?
            .into_iter()
            .map(MdnView::from)
            .collect())
    }

    fn wake_for(&self, connector: &str) -> Arc<Notify> {
        self.wake
            .get(connector)
            .cloned()
            .unwrap_or_else(|| Arc::new(Notify::new()))
    }
}

/// Starts one supervised sender per `sign`-mode Direct connector (`direct-mdn:<connector>`),
/// woken by [`MdnOutbox::enqueue`] and at least every [`POLL`]; they stop on the supervisor's
/// shutdown. A connector whose keys or transport cannot be built is logged and skipped (the
/// daemon's connectors refuse to start with it anyway).
pub fn spawn(config: &Config, outbox: &MdnOutbox, supervisor: &Supervisor) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    for (name, direct) in direct_connectors(config) {
        if direct.mode != DirectMode::Sign {
            continue;
        }
        let channel = match crate::channels::direct::build(
            name,
            direct,
            &config.security,
            &config.data_dir,
        ) {
            Ok(channel) => Arc::new(channel),
            Err(e) => {
                warn!(connector = %name, error = %e, "MDN sender not started");
                continue;
            }
        };
        let sender = Arc::new(Sender {
            reporting_ua: format!("{}; Switchboard", channel.domain()),
            channel,
            store: outbox.store.clone(),
            wake: outbox.wake_for(name),
        });
        handles.push(supervisor.spawn(format!("direct-mdn:{name}"), move |stop| {
            let sender = sender.clone();
            async move { sender.run(stop).await }
        }));
    }
    handles
}

/// The sender of one connector.
struct Sender {
    channel: Arc<DirectChannel>,
    store: Store,
    wake: Arc<Notify>,
    reporting_ua: String,
}

impl Sender {
    async fn run(&self, stop: CancellationToken) {
        loop {
            let pause = match self.pass(&stop).await {
                Ok(pause) => pause,
                Err(e) => {
                    warn!(connector = %self.channel.connector(), error = %e, "MDN pass failed");
                    POLL
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends every due MDN of the connector; returns how long until the next falls due
    /// (at most [`POLL`]).
    async fn pass(&self, stop: &CancellationToken) -> Result<Duration, StoreError> {
        let connector = self.channel.connector();
        while !stop.is_cancelled() {
            let now = now_ms();
            let lease_until = now.saturating_add(i64::try_from(LEASE.as_millis()).unwrap_or(0));
            let Some(row) = self
                .store
                .direct()
                .claim_mdn(connector, now, lease_until)
                .await?
            else {
                break;
            };
            self.attempt(&row).await?;
        }
        let pause = match self.store.direct().next_mdn_due(connector).await? {
            Some(due) => {
                let wait = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                Duration::from_millis(wait).clamp(Duration::from_millis(20), POLL)
            }
            None => POLL,
        };
        Ok(pause)
    }

    /// One attempt at a claimed row, and its outcome written.
    async fn attempt(&self, row: &MdnRow) -> Result<(), StoreError> {
        match self.send(row).await {
            Ok(()) => {
                self.store.direct().mdn_sent(&row.id).await?;
                SENT.fetch_add(1, Ordering::Relaxed);
                info!(mdn_id = %row.id, inbound_item_id = %row.inbound_item_id, disposition = %row.disposition, attempt = row.attempts + 1, "MDN sent");
            }
            Err(e) => {
                let (permanent, reason) = match e {
                    ChannelError::Permanent(r) => (true, r),
                    ChannelError::Transient(r) | ChannelError::Unanswered(r) => (false, r),
                };
                let reason = crate::channels::email::redact_addresses(&reason);
                let next = now_ms().saturating_add(
                    i64::try_from(backoff(row.attempts + 1).as_millis()).unwrap_or(i64::MAX),
                );
                let status = self
                    .store
                    .direct()
                    .mdn_attempt_failed(&row.id, &reason, permanent, next, MAX_ATTEMPTS)
                    .await?;
                if status == "failed" {
                    FAILED.fetch_add(1, Ordering::Relaxed);
                    warn!(mdn_id = %row.id, inbound_item_id = %row.inbound_item_id, disposition = %row.disposition, attempt = row.attempts + 1, reason = %reason, "MDN failed");
                } else {
                    RETRIED.fetch_add(1, Ordering::Relaxed);
                    info!(mdn_id = %row.id, inbound_item_id = %row.inbound_item_id, disposition = %row.disposition, attempt = row.attempts + 1, reason = %reason, "MDN attempt failed; will retry");
                }
            }
        }
        Ok(())
    }

    /// Builds, seals and submits the MDN of `row`.
    async fn send(&self, row: &MdnRow) -> Result<(), ChannelError> {
        let to = row.recipient.trim().to_ascii_lowercase();
        if to.parse::<lettre::Address>().is_err() {
            return Err(ChannelError::Permanent("invalid Direct address".into()));
        }
        let disposition = Disposition::parse(&row.disposition)
            .ok_or_else(|| ChannelError::Permanent("unknown disposition".into()))?;
        let message_id = row
            .message_id
            .clone()
            .unwrap_or_else(|| format!("{}@{}", row.id, self.channel.domain()));
        let report = build_mdn_with_id(
            &MdnRequest {
                from: self.channel.address(),
                to: &to,
                original_message_id: &row.original_message_id,
                reporting_ua: &self.reporting_ua,
                disposition: disposition.report(),
                final_destination_delivery: row.final_destination
                    && disposition == Disposition::Dispatched,
            },
            &message_id,
        )
        .map_err(|e| ChannelError::Permanent(format!("cannot build the MDN: {e}")))?;
        let mut certs = self.stored_certs(row);
        if certs.is_empty() {
            certs = self.channel.discover(&to, LogId::Mdn(&row.id)).await?;
        }
        let sealed = self.channel.seal_to(&report, &to, &certs)?;
        self.channel.relay(&to, &sealed).await
    }

    /// The row's certificates that may be encrypted to (a signing-only certificate may not).
    fn stored_certs(&self, row: &MdnRow) -> Vec<X509> {
        let Some(pem) = row.recipient_certs.as_deref() else {
            return Vec::new();
        };
        let certs = match load_certs(pem.as_bytes()) {
            Ok(certs) => certs,
            Err(e) => {
                warn!(mdn_id = %row.id, error = %e, "stored recipient certificates unreadable; using discovery");
                return Vec::new();
            }
        };
        let total = certs.len();
        let usable: Vec<X509> = certs
            .into_iter()
            .filter(|c| policy::check_for_use(c, KeyPurpose::Encryption).is_ok())
            .collect();
        if usable.is_empty() && total > 0 {
            info!(mdn_id = %row.id, certificates = total, "no stored certificate is usable for encryption; using discovery");
        }
        usable
    }
}
