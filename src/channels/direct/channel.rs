//! [`DirectChannel`]: the `Channel` for one `kind = "direct"` connector. Per delivery: build
//! the message ([`compose`](super::compose)), in `sign` mode find the recipient's certificates
//! (local store, then DNS CERT) and seal it (wrap, sign with our key, encrypt to each
//! certificate), then relay it through the HISP's SMTP with the email channel's transport.
//! The `Message-ID` (`<reference token>@<domain>`, never the delivery id) is the `provider_ref` MDNs are matched on.
//!
//! Outcomes: no usable certificate → permanent ([`NO_CERTIFICATE`]); a DNS failure or every
//! LDAP server failing → transient ([`DISCOVERY_UNAVAILABLE`]); SMTP answers as for the email
//! channel. The tenant sees only those two sentences: which servers, URLs and certificates
//! were tried (and why each failed) would make the delivery history a port scanner's report,
//! so those go to the operator log, keyed by delivery id (hosts and fingerprints, never the
//! recipient's address).
//!
//! The steps (`discover`, `seal_to`, `relay`) are public for the MDNs we owe senders
//! (`crate::direct::mdn`), which leave through the same connector the same way.

use std::sync::Arc;

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use openssl::x509::X509;
use tracing::{debug, warn};

use super::compose;
use super::keys::KeyMaterial;
use crate::channels::email::smtp::classify;
use crate::channels::{Channel, ChannelError, OutboundDelivery, SendOutcome};
use crate::config::DirectMode;
use crate::direct::discovery::{Discovery, Found};
use crate::direct::{SealOptions, seal};
use crate::domain::DeliveryStatus;

/// One Direct connector.
pub struct DirectChannel {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) domain: String,
    pub(super) mode: DirectMode,
    pub(super) seal_options: SealOptions,
    pub(super) keys: Arc<KeyMaterial>,
    pub(super) discovery: Discovery,
    pub(super) transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// The permanent failure when discovery finds nothing usable.
pub const NO_CERTIFICATE: &str = "no trusted certificate for recipient";

/// The transient failure when discovery could not answer (DNS, every LDAP server down).
pub const DISCOVERY_UNAVAILABLE: &str = "certificate discovery unavailable, will retry";

/// Whose attempt a log line is about: a delivery, or an MDN we owe (`direct::mdn`). Log lines
/// carry that id only, never the recipient's address.
#[derive(Debug, Clone, Copy)]
pub enum LogId<'a> {
    Delivery(&'a str),
    Mdn(&'a str),
}

/// `warn!` with the attempt's id as `delivery_id` or `mdn_id`.
macro_rules! warn_for {
    ($id:expr, $($rest:tt)*) => {
        match $id {
            LogId::Delivery(id) => warn!(delivery_id = %id, $($rest)*),
            LogId::Mdn(id) => warn!(mdn_id = %id, $($rest)*),
        }
    };
}

/// The operator's account of a discovery that found nothing usable: each lookup's source,
/// each certificate's fingerprint and verdict, and each note (servers, fetches). Never the
/// name looked up (an address, or derived from one).
fn log_steps(id: LogId<'_>, found: &Found) {
    for step in &found.steps {
        let bound = if step.address_bound {
            "address"
        } else {
            "domain"
        };
        for note in &step.notes {
            warn_for!(id, source = %step.source, lookup = bound, note = %note, "certificate discovery");
        }
        for (fingerprint, verdict) in &step.verdicts {
            match verdict {
                Ok(()) => {}
                Err(v) => {
                    warn_for!(id, source = %step.source, lookup = bound, fingerprint = %fingerprint, verdict = %v, "recipient certificate rejected")
                }
            }
        }
    }
}

impl DirectChannel {
    /// The connector's name.
    pub fn connector(&self) -> &str {
        &self.name
    }

    /// Our Direct address (lowercased): `From` of what this connector sends.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The domain of our Message-IDs.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Who signs and encrypts.
    pub fn mode(&self) -> DirectMode {
        self.mode
    }

    /// The recipient's usable certificates by discovery: none → permanent
    /// ([`NO_CERTIFICATE`]), discovery that could not answer → transient
    /// ([`DISCOVERY_UNAVAILABLE`]); the detail goes to the operator log under `id`.
    pub async fn discover(&self, to: &str, id: LogId<'_>) -> Result<Vec<X509>, ChannelError> {
        let found = self
            .discovery
            .find(to, chrono::Utc::now())
            .await
            .map_err(|e| {
                warn_for!(id, connector = %self.name, error = %e.log_detail(), "certificate discovery unavailable");
                ChannelError::Transient(DISCOVERY_UNAVAILABLE.into())
            })?;
        if found.certs.is_empty() {
            log_steps(id, &found);
            warn_for!(id, connector = %self.name, steps = found.steps.len(), "no usable recipient certificate");
            return Err(ChannelError::Permanent(NO_CERTIFICATE.into()));
        }
        Ok(found.certs)
    }

    /// Seals `inner` (wrap, sign with our key, encrypt to `certs`) with the connector's cipher.
    /// The outer headers are the inner message's From, To, Date and Message-ID.
    pub fn seal_to(&self, inner: &[u8], to: &str, certs: &[X509]) -> Result<Vec<u8>, ChannelError> {
        let signer = self
            .keys
            .signer
            .as_ref()
            .ok_or_else(|| ChannelError::Permanent("no signing key configured".into()))?;
        seal(
            inner,
            &self.address,
            &[to],
            &signer.cert,
            &signer.key,
            &signer.chain,
            certs,
            self.seal_options,
        )
        .map_err(|e| ChannelError::Permanent(format!("cannot seal: {e}")))
    }

    /// Submits `bytes` from our address to `to` through the HISP's SMTP. Errors are classed as
    /// for the email channel (4xx and connection failures transient, 5xx permanent; addresses
    /// redacted from the server's text).
    pub async fn relay(&self, to: &str, bytes: &[u8]) -> Result<(), ChannelError> {
        let from = self
            .address
            .parse()
            .map_err(|_| ChannelError::Permanent("invalid sender address".into()))?;
        let to = to
            .trim()
            .parse()
            .map_err(|_| ChannelError::Permanent("invalid Direct address".into()))?;
        let envelope = Envelope::new(Some(from), vec![to])
            .map_err(|e| ChannelError::Permanent(format!("envelope: {e}")))?;
        match self.transport.send_raw(&envelope, bytes).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }

    /// Builds the bytes to submit for `delivery` (sealed in `sign` mode). Public for the
    /// benchmark; `Err` is already a channel outcome.
    pub async fn prepare(
        &self,
        delivery: &OutboundDelivery,
    ) -> Result<(String, Vec<u8>), ChannelError> {
        let to = delivery.recipient.trim().to_ascii_lowercase();
        if to.parse::<lettre::Address>().is_err() {
            return Err(ChannelError::Permanent("invalid Direct address".into()));
        }
        let message_id = format!("{}@{}", delivery.reference, self.domain);
        let inner = compose::inner_message(
            &self.address,
            &to,
            &message_id,
            delivery.subject.as_deref(),
            &delivery.body,
            &delivery.attachments,
        );
        let bytes = match self.mode {
            DirectMode::Edge => inner,
            DirectMode::Sign => {
                let id = delivery.delivery_id.to_string();
                let certs = self.discover(&to, LogId::Delivery(&id)).await?;
                let sealed = self.seal_to(&inner, &to, &certs)?;
                let mut out = compose::notification_headers(&self.address).into_bytes();
                out.extend_from_slice(&sealed);
                out
            }
        };
        Ok((message_id, bytes))
    }
}

#[async_trait::async_trait]
impl Channel for DirectChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn external(&self) -> bool {
        true
    }

    async fn send(&self, delivery: &OutboundDelivery) -> Result<SendOutcome, ChannelError> {
        let (message_id, bytes) = self.prepare(delivery).await?;
        self.relay(&delivery.recipient, &bytes).await?;
        debug!(delivery_id = %delivery.delivery_id, "direct delivery relayed");
        Ok(SendOutcome {
            status: DeliveryStatus::Sent,
            provider_ref: Some(message_id),
        })
    }
}
