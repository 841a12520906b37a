//! Watching an IMAP mailbox between passes, for the bounce poller and the Direct tracker.
//!
//! A pass (the caller's) reads the unseen messages of a session [`MailboxWatch::session`]
//! hands out. Then [`MailboxWatch::wait`] waits for the next pass:
//!
//! * the mailbox's `idle` is on and the server lists `IDLE` in CAPABILITY: the session is kept
//!   and waits in IMAP IDLE (RFC 2177) until the server reports new mail (`* n EXISTS`), the
//!   poll interval passes, or at most [`IDLE_REISSUE`] (RFC 2177 asks clients to re-issue IDLE
//!   at least every 29 minutes); on shutdown it sends `DONE` and logs out;
//! * otherwise: it logs out and sleeps the poll interval, as a plain poller.
//!
//! A failed IDLE drops the connection and falls back to one sleep; the next pass reconnects.
//! Log lines carry no addresses or message text.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::EmailError;
use super::imap::{IdleEnd, ImapLimits, ImapSession, ImapTarget};
use super::transport::tls_connector;
use crate::config::{ImapMailboxConfig, TlsMode};

/// How long one IMAP exchange may take.
pub const IMAP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest single IDLE before it is re-issued.
pub const IDLE_REISSUE: Duration = Duration::from_secs(25 * 60);

/// Connects, logs in and selects the configured mailbox.
pub async fn open(config: &ImapMailboxConfig) -> Result<ImapSession, EmailError> {
    let connector = match config.tls {
        TlsMode::None => None,
        _ => Some(tls_connector(config.ca_certificate.as_deref())?),
    };
    let password = config.password.read()?;
    let mut session = ImapSession::connect(ImapTarget {
        host: &config.host,
        port: config.port,
        tls: config.tls,
        connector: connector.as_ref(),
        timeout: IMAP_TIMEOUT,
        limits: ImapLimits {
            max_bytes: config.max_response_bytes,
            max_untagged: config.max_untagged_responses,
        },
    })
    .await?;
    session.login(&config.username, &password).await?;
    session.select(&config.mailbox).await?;
    Ok(session)
}

/// One watched mailbox: the session kept between passes (with IDLE) and how to wait.
pub struct MailboxWatch {
    config: ImapMailboxConfig,
    session: Option<Session>,
}

struct Session {
    imap: ImapSession,
    can_idle: bool,
}

impl MailboxWatch {
    pub fn new(config: ImapMailboxConfig) -> Self {
        Self {
            config,
            session: None,
        }
    }

    /// The poll interval (at least a second).
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.config.poll_interval_secs.max(1))
    }

    /// A logged-in session with the mailbox selected: the kept one, or a new one.
    pub async fn session(&mut self) -> Result<&mut ImapSession, EmailError> {
        if self.session.is_none() {
            let mut imap = open(&self.config).await?;
            let can_idle = self.config.idle
                && imap
                    .capabilities()
                    .await?
                    .iter()
                    .any(|c| c.as_str() == "IDLE");
            debug!(idle = can_idle, "mailbox session opened");
            self.session = Some(Session { imap, can_idle });
        }
        match self.session.as_mut() {
            Some(s) => Ok(&mut s.imap),
            None => Err(EmailError::Config("no IMAP session".into())),
        }
    }

    /// Forgets the session after an error (dropped without LOGOUT: its state is unknown).
    pub fn reset(&mut self) {
        self.session = None;
    }

    /// Logs out of the kept session, if any.
    pub async fn close(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.imap.logout().await;
        }
    }

    /// Waits for the next pass (see the module docs). `false`: shutdown.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let interval = self.interval();
        if let Some(session) = self.session.as_mut().filter(|s| s.can_idle) {
            match session
                .imap
                .idle(interval.min(IDLE_REISSUE), shutdown)
                .await
            {
                Ok(IdleEnd::NewMail) => {
                    debug!("IDLE: new mail");
                    return true;
                }
                Ok(IdleEnd::Timeout) => return true,
                Ok(IdleEnd::Shutdown) => {
                    self.close().await;
                    return false;
                }
                Err(e) => {
                    warn!(error = %e, "IMAP IDLE failed; reconnecting after the poll interval");
                    self.reset();
                }
            }
        }
        // Polling: no connection is held between polls.
        self.close().await;
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(interval) => true,
        }
    }
}
