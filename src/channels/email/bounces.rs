//! The bounce poller: one task per SMTP connector with `bounces` configured. Each pass reads
//! the IMAP mailbox's unseen messages without marking them, and for each DSN reporting a
//! failure hands the candidate reference tokens and the diagnostic to a [`BounceSink`], which
//! applies it only to a `sent` delivery of this connector. Only after
//! the sink has committed is the message flagged `\Seen` (durable before ack: a crash in
//! between re-reads it, and the store's monotonic update makes the repeat harmless). Messages
//! that are not DSNs, or name no delivery of ours, are left untouched (not flagged, not moved)
//! and skipped by later passes of this run. Between passes the mailbox is watched with IMAP
//! IDLE when the server offers it, else polled every `poll_interval_secs` ([`super::watch`]).
//!
//! Log lines carry delivery ids and IMAP UIDs, never addresses or message text.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::EmailError;
use super::dsn::parse_bounce;
use super::imap::ImapSession;
use super::watch::{MailboxWatch, open};
use crate::config::ImapMailboxConfig;

/// Where bounce failures are recorded (the daemon implements it over the store).
#[async_trait::async_trait]
pub trait BounceSink: Send + Sync {
    /// Records `reason` as the failure of the first candidate (a reference token) that names a
    /// `sent` delivery carried by `connector`, committed before returning. `Ok(None)`: no
    /// candidate is such a delivery.
    async fn record_bounce(
        &self,
        connector: &str,
        candidates: &[String],
        reason: &str,
    ) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>>;
}

/// Watches the mailbox until `shutdown`. `domain` is the connector's Message-ID domain.
pub async fn poll_bounces(
    connector: String,
    config: ImapMailboxConfig,
    domain: String,
    sink: Arc<dyn BounceSink>,
    shutdown: CancellationToken,
) {
    let mut watch = MailboxWatch::new(config);
    let mut skip: HashSet<u32> = HashSet::new();
    loop {
        // Shutdown may cut a pass short: at worst a recorded bounce is not yet flagged, and
        // the next run records it again, which the monotonic update ignores.
        let result = tokio::select! {
            _ = shutdown.cancelled() => None,
            result = async {
                let session = watch.session().await?;
                read_bounces(session, &connector, &domain, sink.as_ref(), &mut skip).await
            } => Some(result),
        };
        let Some(result) = result else {
            // Cut short mid-command: the session's state is unknown, so no LOGOUT on it.
            watch.reset();
            break;
        };
        match result {
            Ok(0) => debug!(connector, "no new bounces"),
            Ok(count) => info!(connector, count, "bounces recorded"),
            Err(e) => {
                warn!(connector, error = %e, "bounce mailbox poll failed");
                watch.reset();
            }
        }
        if !watch.wait(&shutdown).await {
            break;
        }
    }
    watch.close().await;
}

/// One poll on a fresh connection: returns how many bounces were recorded.
pub async fn poll_once(
    connector: &str,
    config: &ImapMailboxConfig,
    domain: &str,
    sink: &dyn BounceSink,
    skip: &mut HashSet<u32>,
) -> Result<usize, EmailError> {
    let mut session = open(config).await?;
    let recorded = read_bounces(&mut session, connector, domain, sink, skip).await?;
    let _ = session.logout().await;
    Ok(recorded)
}

/// Reads the unseen messages of the selected mailbox: returns how many bounces were recorded.
async fn read_bounces(
    session: &mut ImapSession,
    connector: &str,
    domain: &str,
    sink: &dyn BounceSink,
    skip: &mut HashSet<u32>,
) -> Result<usize, EmailError> {
    if skip.len() > 100_000 {
        skip.clear();
    }
    let mut recorded = 0;
    for uid in session.unseen().await? {
        if skip.contains(&uid) {
            continue;
        }
        let Some(raw) = session.fetch(uid).await? else {
            continue;
        };
        let Some(bounce) = parse_bounce(&raw) else {
            skip.insert(uid);
            continue;
        };
        let candidates = bounce.candidates(domain);
        if candidates.is_empty() {
            debug!(uid, "DSN names no delivery of ours; left alone");
            skip.insert(uid);
            continue;
        }
        match sink
            .record_bounce(connector, &candidates, &bounce.reason)
            .await
        {
            Ok(Some(delivery_id)) => {
                session.mark_seen(uid).await?;
                info!(%delivery_id, uid, "bounce recorded");
                recorded += 1;
            }
            Ok(None) => {
                debug!(uid, "DSN for an unknown delivery; left alone");
                skip.insert(uid);
            }
            Err(e) => {
                warn!(uid, error = %e, "bounce not recorded; will retry");
            }
        }
    }
    Ok(recorded)
}
