//! [`SmtpChannel`]: the `Channel` for one `kind = "smtp"` connector, and how SMTP answers map
//! to outcomes: 2xx → `sent` with the server's reply (its queue id) as `provider_ref`; 4xx and
//! connection, TLS, I/O or timeout failures → transient (retried with backoff); 5xx →
//! permanent, with the reply code and text as the reason.

use std::error::Error as _;
use std::sync::Arc;

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tracing::debug;

use super::compose::Composer;
use super::transport::smtp_transport;
use super::{EmailError, redact_addresses};
use crate::channels::{Channel, ChannelError, OutboundDelivery, SendOutcome};
use crate::config::SmtpConnectorConfig;
use crate::domain::DeliveryStatus;
use crate::ratelimit::RateLimiter;
use crate::templates::Templates;

/// An SMTP relay connector.
pub struct SmtpChannel {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    composer: Composer,
    limiter: Option<RateLimiter>,
}

impl SmtpChannel {
    /// Builds the connector `name` (reads its password secret once, here).
    pub fn new(
        name: &str,
        config: &SmtpConnectorConfig,
        templates: Arc<Templates>,
    ) -> Result<Self, EmailError> {
        Ok(Self {
            name: name.to_string(),
            transport: smtp_transport(config)?,
            composer: Composer::new(templates, config)?,
            // A burst of one second's worth: relays limit per second, not per message.
            limiter: RateLimiter::per_second(config.rate_per_sec, config.rate_per_sec as u32),
        })
    }
}

#[async_trait::async_trait]
impl Channel for SmtpChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn external(&self) -> bool {
        true
    }

    async fn send(&self, delivery: &OutboundDelivery) -> Result<SendOutcome, ChannelError> {
        let message = self
            .composer
            .compose(delivery)
            .map_err(|e| ChannelError::Permanent(format!("cannot compose the email: {e}")))?;
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        match self.transport.send(message).await {
            Ok(response) => {
                let reply = response.message().collect::<Vec<_>>().join(" ");
                debug!(delivery_id = %delivery.delivery_id, code = %response.code(), "smtp accepted");
                Ok(SendOutcome {
                    status: DeliveryStatus::Sent,
                    provider_ref: Some(reply).filter(|r| !r.trim().is_empty()),
                })
            }
            Err(e) => Err(classify(&e)),
        }
    }
}

/// Maps a lettre error to a channel error (see the module docs).
pub fn classify(error: &lettre::transport::smtp::Error) -> ChannelError {
    let text = redact_addresses(
        &error
            .source()
            .map(|s| s.to_string())
            .unwrap_or_else(|| error.to_string()),
    );
    match error.status() {
        Some(code) if error.is_permanent() => ChannelError::Permanent(format!("{code} {text}")),
        Some(code) => ChannelError::Transient(format!("{code} {text}")),
        None => {
            let full = redact_addresses(&error.to_string());
            if error.is_timeout() {
                ChannelError::Transient(format!("smtp timeout: {full}"))
            } else {
                ChannelError::Transient(format!("smtp: {full}"))
            }
        }
    }
}
