//! Tracking Direct deliveries: reads the HISP mailbox over IMAP (the email channel's client)
//! for MDNs and DSNs, and runs the expiry pass. Between passes the mailbox is watched with
//! IMAP IDLE when the server offers it (a notification is read as soon as it arrives), else
//! polled every `poll_interval_secs` (`channels::email::watch`). The expiry pass runs on its
//! own every `expiry_interval_secs`.
//!
//! Per unseen message: in `sign` mode it must be a Direct message we can decrypt, signed by a
//! certificate bound to its From address and chaining to an inbound anchor for that domain
//! (`direct::open`); an MDN must also come from the final recipient it reports on. Anything
//! else is quarantined: logged by IMAP UID, left unflagged, skipped for the rest of the run,
//! and never answered (no MDN or DSN is ever sent about a notification). Unsigned DSNs pass
//! only with `accept_unsigned_dsns`; in `edge` mode the HISP has done the security and plain
//! notifications are read as they are.
//!
//! Mapping (RI bugs #196/#251/#265: a failure is a failure): processed → `processed`;
//! dispatched with `X-DIRECT-FINAL-DESTINATION-DELIVERY` → `dispatched` (without it: recorded
//! as processed); failed/denied/deleted/error MDN or failed DSN → `failed` with the reason;
//! delayed/delivered DSNs change nothing. The message is flagged `\Seen` only after the sink
//! has committed. Logs carry delivery ids and UIDs only.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::channels::email::EmailError;
use crate::channels::email::imap::ImapSession;
use crate::channels::email::watch::{MailboxWatch, open};
use crate::config::{DirectConnectorConfig, DirectMode};
use crate::direct::anchors::{Anchors, Direction, domain_of};
use crate::direct::mdn::{Notification, NotificationKind, Outcome, parse_notifications};
use crate::domain::DeliveryStatus;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A notification matched to what it reports on, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The original Message-ID (our `provider_ref`), without brackets.
    pub message_id: String,
    /// The final recipient, lowercased, when the notification names one.
    pub recipient: Option<String>,
    pub status: DeliveryStatus,
    /// `mdn` or `dsn`.
    pub source: &'static str,
    pub detail: String,
    pub reason: Option<String>,
}

/// Where notifications and expiries are recorded (the daemon implements it over the store).
#[async_trait::async_trait]
pub trait NotificationSink: Send + Sync {
    /// Records the notification against its delivery, committed before returning.
    /// `Ok(None)`: it names no delivery of this connector.
    async fn apply(&self, connector: &str, tracked: &Tracked) -> Result<Option<String>, BoxError>;
    /// Expires this connector's deliveries `sent` before `sent_before` (and `processed`
    /// before `processed_before`, when given); returns how many.
    async fn expire(
        &self,
        connector: &str,
        sent_before: i64,
        processed_before: Option<i64>,
    ) -> Result<usize, BoxError>;
}

/// What became of a mailbox message that is not a plain notification.
#[derive(Debug)]
pub enum Taken {
    /// It opened (decrypted, verified) to a notification about our own sending.
    Notification { inner: Vec<u8>, sender: String },
    /// It was recorded as an inbound item (filed, unmatched, quarantined, a duplicate…):
    /// durable, so the mailbox message may be flagged.
    Recorded {
        item_id: String,
        outcome: &'static str,
    },
}

/// Where messages that are not plain notifications go: the daemon's inbound Direct service
/// (`crate::direct::inbound`), which decrypts and verifies them and records every one that is
/// not a notification of ours.
#[async_trait::async_trait]
pub trait MessageSink: Send + Sync {
    async fn take(&self, connector: &str, raw: &[u8]) -> Result<Taken, BoxError>;
}

/// What the tracker needs besides the mailbox.
pub struct TrackerKeys {
    pub decryption: Vec<(X509, PKey<Private>)>,
    pub anchors: Arc<Anchors>,
}

/// Maps parsed notifications to state changes (see the module docs).
pub fn track(notifications: &[Notification]) -> Vec<Tracked> {
    notifications
        .iter()
        .filter_map(|n| {
            let message_id = n.original_message_id.clone()?;
            let source = match n.kind {
                NotificationKind::Mdn => "mdn",
                NotificationKind::Dsn => "dsn",
            };
            let (status, detail, reason) = match &n.outcome {
                Outcome::Processed => (DeliveryStatus::Processed, "processed MDN".into(), None),
                Outcome::Dispatched if n.final_destination_delivery => (
                    DeliveryStatus::Dispatched,
                    "dispatched MDN (final destination delivery)".into(),
                    None,
                ),
                Outcome::Dispatched => (
                    DeliveryStatus::Processed,
                    "dispatched MDN without X-DIRECT-FINAL-DESTINATION-DELIVERY".into(),
                    None,
                ),
                Outcome::Failed { reason } => (
                    DeliveryStatus::Failed,
                    format!("failure {source}"),
                    Some(crate::channels::email::redact_addresses(reason)),
                ),
                Outcome::Delayed | Outcome::Delivered => return None,
            };
            Some(Tracked {
                message_id,
                recipient: n.final_recipient.clone(),
                status,
                source,
                detail,
                reason,
            })
        })
        .collect()
}

/// Why a message in the mailbox was not used.
#[derive(Debug, thiserror::Error)]
pub enum Quarantine {
    #[error("not a delivery notification")]
    NotANotification,
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("unsigned notification")]
    Unsigned,
    #[error("MDN not sent by the recipient it reports on")]
    WrongReporter,
}

fn from_address(raw: &[u8]) -> Option<String> {
    let msg = switchboard_mail::parse_message(raw)?;
    let addr = msg.from()?.first()?.address()?.trim().to_ascii_lowercase();
    Some(addr)
}

/// The notifications in a message that security processing opened, sent by `sender`: an MDN
/// speaks for its final recipient only, so it must be that recipient's.
pub fn read_opened(inner: &[u8], sender: &str) -> Result<Vec<Tracked>, Quarantine> {
    let notes = parse_notifications(inner).map_err(|_| Quarantine::NotANotification)?;
    if notes
        .iter()
        .any(|n| n.kind == NotificationKind::Mdn && n.final_recipient.as_deref() != Some(sender))
    {
        return Err(Quarantine::WrongReporter);
    }
    Ok(track(&notes))
}

/// Reads one mailbox message into state changes, or says why it is quarantined.
pub fn read_message(
    raw: &[u8],
    mode: DirectMode,
    accept_unsigned_dsns: bool,
    keys: &TrackerKeys,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Tracked>, Quarantine> {
    if switchboard_mail::mime::is_pkcs7_mime(raw) {
        let sender = from_address(raw).ok_or(Quarantine::Rejected("no From address".into()))?;
        let trust = keys
            .anchors
            .store_for(&domain_of(&sender), Direction::Inbound);
        let opened = crate::direct::open(raw, &keys.decryption, &trust, &sender, now)
            .map_err(|e| Quarantine::Rejected(e.to_string()))?;
        return read_opened(&opened.inner, &sender);
    }
    let notes = parse_notifications(raw).map_err(|_| Quarantine::NotANotification)?;
    if mode == DirectMode::Sign {
        let all_dsns = notes.iter().all(|n| n.kind == NotificationKind::Dsn);
        if !(accept_unsigned_dsns && all_dsns) {
            return Err(Quarantine::Unsigned);
        }
    }
    Ok(track(&notes))
}

/// The tracker of one connector.
pub struct Tracker {
    pub connector: String,
    pub config: DirectConnectorConfig,
    pub keys: TrackerKeys,
    pub sink: Arc<dyn NotificationSink>,
    /// Inbound messages (everything that is not a plain notification); `None`: the mailbox
    /// is read for notifications only.
    pub messages: Option<Arc<dyn MessageSink>>,
}

impl Tracker {
    /// Reads the mailbox and expires until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::join!(
            self.watch_mailbox(&shutdown),
            self.expire_regularly(&shutdown)
        );
    }

    /// Reads the mailbox as notifications arrive (IDLE) or every poll interval.
    pub(crate) async fn watch_mailbox(&self, shutdown: &CancellationToken) {
        let Some(mailbox) = self.config.mailbox.clone() else {
            return;
        };
        let mut watch = MailboxWatch::new(mailbox);
        let mut skip = HashSet::new();
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => None,
                r = async {
                    let session = watch.session().await?;
                    self.read_mailbox(session, &mut skip).await
                } => Some(r),
            };
            let Some(result) = result else {
                // Cut short mid-command: the session's state is unknown, so no LOGOUT on it.
                watch.reset();
                break;
            };
            match result {
                Ok(0) => debug!(connector = %self.connector, "no new notifications"),
                Ok(count) => info!(connector = %self.connector, count, "notifications applied"),
                Err(e) => {
                    warn!(connector = %self.connector, error = %e, "direct mailbox poll failed");
                    watch.reset();
                }
            }
            if !watch.wait(shutdown).await {
                break;
            }
        }
        watch.close().await;
    }

    /// The expiry pass every `expiry_interval_secs`.
    pub(crate) async fn expire_regularly(&self, shutdown: &CancellationToken) {
        let interval = Duration::from_secs(self.config.expiry_interval_secs.max(1));
        loop {
            match self.expire_once().await {
                Ok(0) => {}
                Ok(count) => info!(connector = %self.connector, count, "direct deliveries expired"),
                Err(e) => warn!(connector = %self.connector, error = %e, "expiry pass failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One expiry pass.
    pub async fn expire_once(&self) -> Result<usize, BoxError> {
        let now = chrono::Utc::now().timestamp_millis();
        let sent_before = now - (self.config.processed_timeout_secs as i64) * 1000;
        let processed_before = (self.config.dispatched_timeout_secs > 0)
            .then(|| now - (self.config.dispatched_timeout_secs as i64) * 1000);
        self.sink
            .expire(&self.connector, sent_before, processed_before)
            .await
    }

    /// One mailbox poll on a fresh connection: returns how many notifications were applied.
    pub async fn poll_once(
        &self,
        mailbox: &crate::config::ImapMailboxConfig,
        skip: &mut HashSet<u32>,
    ) -> Result<usize, EmailError> {
        let mut session = open(mailbox).await?;
        let applied = self.read_mailbox(&mut session, skip).await?;
        let _ = session.logout().await;
        Ok(applied)
    }

    /// Reads the unseen messages of the selected mailbox: returns how many notifications were
    /// applied.
    async fn read_mailbox(
        &self,
        session: &mut ImapSession,
        skip: &mut HashSet<u32>,
    ) -> Result<usize, EmailError> {
        if skip.len() > 100_000 {
            skip.clear();
        }
        let mut applied = 0;
        for uid in session.unseen().await? {
            if skip.contains(&uid) {
                continue;
            }
            let Some(raw) = session.fetch(uid).await? else {
                continue;
            };
            let read = match &self.messages {
                // A plain notification is the tracker's; everything else the inbound service's.
                Some(messages)
                    if switchboard_mail::mime::is_pkcs7_mime(&raw)
                        || parse_notifications(&raw).is_err() =>
                {
                    match messages.take(&self.connector, &raw).await {
                        Ok(Taken::Notification { inner, sender }) => read_opened(&inner, &sender),
                        Ok(Taken::Recorded { item_id, outcome }) => {
                            info!(connector = %self.connector, uid, inbound_item_id = %item_id, outcome, "inbound Direct message recorded");
                            crate::testing_hooks::kill_point("direct-recorded");
                            session.mark_seen(uid).await?;
                            continue;
                        }
                        Err(e) => {
                            warn!(connector = %self.connector, uid, error = %e, "inbound Direct message not recorded; will retry");
                            continue;
                        }
                    }
                }
                _ => read_message(
                    &raw,
                    self.config.mode,
                    self.config.accept_unsigned_dsns,
                    &self.keys,
                    chrono::Utc::now(),
                ),
            };
            let tracked = match read {
                Ok(t) => t,
                Err(why) => {
                    warn!(connector = %self.connector, uid, reason = %why, "notification quarantined");
                    skip.insert(uid);
                    continue;
                }
            };
            let mut matched = 0;
            let mut failed = false;
            for t in &tracked {
                match self.sink.apply(&self.connector, t).await {
                    Ok(Some(delivery_id)) => {
                        info!(%delivery_id, uid, status = t.status.as_str(), source = t.source, "notification recorded");
                        matched += 1;
                    }
                    Ok(None) => debug!(uid, "notification for an unknown delivery"),
                    Err(e) => {
                        warn!(uid, error = %e, "notification not recorded; will retry");
                        failed = true;
                    }
                }
            }
            if failed {
                continue;
            }
            if matched > 0 || tracked.is_empty() {
                // Committed (or nothing to apply, e.g. a delay DSN): flag it read.
                session.mark_seen(uid).await?;
                applied += matched;
            } else {
                debug!(uid, "notification names no delivery of ours; left alone");
                skip.insert(uid);
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/direct/messages/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("vector")
    }

    fn keys() -> TrackerKeys {
        TrackerKeys {
            decryption: Vec::new(),
            anchors: Arc::new(Anchors::default()),
        }
    }

    #[test]
    fn reference_implementation_notifications_map_to_states() {
        let now = chrono::Utc::now();
        let read = |name: &str| read_message(&vector(name), DirectMode::Edge, false, &keys(), now);
        let processed = read("ri-MDNMessage.txt").expect("processed MDN");
        assert_eq!(processed[0].status, DeliveryStatus::Processed);
        let dispatched = read("ri-MDNDispatchedMessage.txt").expect("dispatched MDN");
        assert_eq!(dispatched[0].status, DeliveryStatus::Dispatched);
        let dsn = read("ri-DSNMessage.txt").expect("DSN");
        assert!(
            dsn.iter()
                .all(|t| t.status == DeliveryStatus::Failed && t.source == "dsn")
        );
        assert!(
            dsn.iter()
                .all(|t| t.reason.as_deref().is_some_and(|r| !r.contains('@')))
        );
    }

    #[test]
    fn sign_mode_quarantines_unsigned_notifications() {
        let now = chrono::Utc::now();
        let mdn = vector("ri-MDNMessage.txt");
        assert!(matches!(
            read_message(&mdn, DirectMode::Sign, true, &keys(), now),
            Err(Quarantine::Unsigned)
        ));
        let dsn = vector("ri-DSNMessage.txt");
        assert!(matches!(
            read_message(&dsn, DirectMode::Sign, false, &keys(), now),
            Err(Quarantine::Unsigned)
        ));
        assert!(read_message(&dsn, DirectMode::Sign, true, &keys(), now).is_ok());
        assert!(matches!(
            read_message(
                b"Subject: hi\r\n\r\nhello\r\n",
                DirectMode::Edge,
                false,
                &keys(),
                now
            ),
            Err(Quarantine::NotANotification)
        ));
    }
}
