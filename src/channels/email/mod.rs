//! The email channel: an SMTP relay (`[connectors.<name>] kind = "smtp"`) carried by lettre,
//! and the bounce (DSN) reader for its return-path mailbox.
//!
//! Owns: composing patient email from templates under the PHI rule ([`compose`]), the SMTP
//! transport with its TLS modes, credentials, pool and rate limit ([`transport`]; the rate limit is `crate::ratelimit`'s),
//! classifying SMTP replies into channel outcomes ([`smtp`]), a minimal IMAP client
//! ([`imap`]) and DSN parsing ([`dsn`]) for bounces, the polling loop ([`bounces`]) and the
//! IDLE-or-poll wait between its passes ([`watch`], shared with the Direct tracker).
//! Does not own: the store. The bounce loop reports failures through the [`BounceSink`]
//! trait, which the daemon implements over the store.

pub mod bounces;
pub mod compose;

pub use switchboard_mail::{dsn, imap};
pub mod smtp;
pub(crate) mod transport;
pub mod watch;

pub use bounces::{BounceSink, poll_bounces};
pub use smtp::SmtpChannel;

pub use switchboard_mail::redact_addresses;

/// Why the email connector could not be built or a mailbox could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("{0}")]
    Config(String),
    #[error("secret: {0}")]
    Secret(#[from] crate::config::ConfigError),
    #[error("template: {0}")]
    Template(#[from] crate::templates::TemplateError),
    #[error("address {what} is invalid")]
    Address { what: &'static str },
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    /// Setting up TLS for SMTP.
    #[error("TLS: {0}")]
    SmtpTls(#[from] lettre::transport::smtp::Error),
    /// Setting up TLS for IMAP.
    #[error("TLS: {0}")]
    Tls(#[from] native_tls::Error),
    /// The extra CA certificate (`ca_certificate`) cannot be read or is not a certificate.
    #[error("TLS: {}: {source}", path.display())]
    CaCertificate {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Imap(#[from] imap::ImapError),
}

use std::sync::Arc;

use crate::config::{Config, ConnectorConfig, ImapMailboxConfig, SmtpConnectorConfig};
use crate::templates::Templates;

fn smtp_connectors(config: &Config) -> impl Iterator<Item = (&String, &SmtpConnectorConfig)> {
    config.connectors.iter().filter_map(|(name, c)| match c {
        ConnectorConfig::Smtp(smtp) => Some((name, smtp)),
        _ => None,
    })
}

/// Builds every `kind = "smtp"` connector (each named as in the configuration).
pub fn build_connectors(
    config: &Config,
    templates: &Arc<Templates>,
) -> Result<Vec<Arc<dyn crate::channels::Channel>>, EmailError> {
    let mut built: Vec<Arc<dyn crate::channels::Channel>> = Vec::new();
    for (name, smtp) in smtp_connectors(config) {
        let channel = SmtpChannel::new(name, smtp, templates.clone())
            .map_err(|e| EmailError::Config(format!("connectors.{name}: {e}")))?;
        built.push(Arc::new(channel));
    }
    Ok(built)
}

/// One bounce mailbox to poll.
#[derive(Debug, Clone)]
pub struct BounceMailbox {
    pub connector: String,
    pub mailbox: ImapMailboxConfig,
    /// The connector's Message-ID domain.
    pub domain: String,
}

/// The SMTP connectors with `bounces` configured.
pub fn bounce_mailboxes(config: &Config) -> Vec<BounceMailbox> {
    smtp_connectors(config)
        .filter_map(|(name, smtp)| {
            let mailbox = smtp.bounces.clone()?;
            let domain = compose::message_domain(smtp)?;
            Some(BounceMailbox {
                connector: name.clone(),
                mailbox,
                domain,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_redacted_from_reasons() {
        assert_eq!(
            super::redact_addresses(
                "smtp; 550 5.1.1 <jane@example.org>: Recipient address rejected"
            ),
            "smtp; 550 5.1.1 <address>: Recipient address rejected"
        );
        assert_eq!(
            super::redact_addresses("451 4.3.0 Try again"),
            "451 4.3.0 Try again"
        );
    }
}
