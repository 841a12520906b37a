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

use std::sync::Arc;

use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
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

/// The operator's account of a discovery that found nothing usable: each lookup's source,
/// each certificate's fingerprint and verdict, and each note (servers, fetches). Never the
/// name looked up (an address, or derived from one).
fn log_steps(delivery_id: &str, found: &Found) {
    for step in &found.steps {
        let bound = if step.address_bound {
            "address"
        } else {
            "domain"
        };
        for note in &step.notes {
            warn!(delivery_id, source = %step.source, lookup = bound, note = %note, "certificate discovery");
        }
        for (fingerprint, verdict) in &step.verdicts {
            match verdict {
                Ok(()) => {}
                Err(v) => {
                    warn!(delivery_id, source = %step.source, lookup = bound, fingerprint = %fingerprint, verdict = %v, "recipient certificate rejected")
                }
            }
        }
    }
}

impl DirectChannel {
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
                let found = self
                    .discovery
                    .find(&to, chrono::Utc::now())
                    .await
                    .map_err(|e| {
                        warn!(delivery_id = %id, connector = %self.name, error = %e.log_detail(), "certificate discovery unavailable");
                        ChannelError::Transient(DISCOVERY_UNAVAILABLE.into())
                    })?;
                if found.certs.is_empty() {
                    log_steps(&id, &found);
                    warn!(delivery_id = %id, connector = %self.name, steps = found.steps.len(), "no usable recipient certificate");
                    return Err(ChannelError::Permanent(NO_CERTIFICATE.into()));
                }
                let signer =
                    self.keys.signer.as_ref().ok_or_else(|| {
                        ChannelError::Permanent("no signing key configured".into())
                    })?;
                let sealed = seal(
                    &inner,
                    &self.address,
                    &[to.as_str()],
                    &signer.cert,
                    &signer.key,
                    &signer.chain,
                    &found.certs,
                    self.seal_options,
                )
                .map_err(|e| ChannelError::Permanent(format!("cannot seal: {e}")))?;
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
        let from = self
            .address
            .parse()
            .map_err(|_| ChannelError::Permanent("invalid sender address".into()))?;
        let to = delivery
            .recipient
            .trim()
            .parse()
            .map_err(|_| ChannelError::Permanent("invalid Direct address".into()))?;
        let envelope = Envelope::new(Some(from), vec![to])
            .map_err(|e| ChannelError::Permanent(format!("envelope: {e}")))?;
        match self.transport.send_raw(&envelope, &bytes).await {
            Ok(response) => {
                debug!(delivery_id = %delivery.delivery_id, code = %response.code(), "direct message relayed");
                Ok(SendOutcome {
                    status: DeliveryStatus::Sent,
                    provider_ref: Some(message_id),
                })
            }
            Err(e) => Err(classify(&e)),
        }
    }
}
