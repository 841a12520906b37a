//! Channels: the `Channel` trait every connector implements, what a send attempt carries and
//! how it can end. One module per channel; `outbox` is the local sink that is the embedded
//! default for every channel.
//!
//! A channel never sees HTTP, HL7 or the store: the queue worker hands it an
//! [`OutboundDelivery`] (already decrypted, consent already checked) and records the outcome.

pub mod direct;
pub mod email;
pub mod fax;
pub mod outbox;

use std::sync::Arc;

use crate::domain::DeliveryStatus;

/// The names of the logical channels a delivery can use ([`crate::domain::Channel::NAMES`]).
pub const CHANNELS: [&str; 6] = crate::domain::Channel::NAMES;

/// One send attempt of one delivery.
#[derive(Debug, Clone)]
pub struct OutboundDelivery {
    pub delivery_id: String,
    /// What third parties see instead of the id: the delivery's keyed reference token
    /// (`Keyring::delivery_token`), used in Message-IDs, VERP return paths and provider
    /// callback URLs.
    pub reference: String,
    pub organization_id: String,
    pub message_id: String,
    pub channel: crate::domain::Channel,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub urgent: bool,
    pub attempt: i64,
    /// What the message is for (`message`, `notification`, `reminder`, `campaign`): picks
    /// templates and whether email may carry the text (`crate::disclosure::email_carries_text`).
    pub purpose: String,
    /// Who is sending.
    pub sender: Arc<Sender>,
    /// The message's files, opened, in the sender's order.
    pub attachments: Vec<Attachment>,
}

/// One file of a message as a channel carries it.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Safe to show (no path, no control characters).
    pub filename: String,
    /// Media type, lower case, checked against the bytes at accept.
    pub content_type: String,
    pub data: bytes::Bytes,
}

/// The organization a delivery is sent for, as patients see it.
#[derive(Debug, Clone)]
pub struct Sender {
    pub organization_id: String,
    pub slug: String,
    /// Display name ("Riverside Family Clinic").
    pub name: String,
    pub settings: crate::config::OrganizationConfig,
}

/// A send that the provider took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// `Sent` (the provider accepted it) or `Delivered` (it reached its destination).
    pub status: DeliveryStatus,
    /// The provider's id for it (queue id, message SID, ...).
    pub provider_ref: Option<String>,
}

/// Why a send did not go through: transient errors are retried with backoff, permanent ones
/// end the delivery as `failed` with the provider's reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("transient: {0}")]
    Transient(String),
    /// Transient, and the provider may have taken the message: the request went out but no
    /// answer came (a timeout, a connection broken after sending).
    #[error("no answer: {0}")]
    Unanswered(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A connector that can carry deliveries.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// The connector's name, as used in `[channels.*] connector = ...`.
    fn name(&self) -> &str;
    /// Whether sending through it discloses outside this host (the local sink does not).
    fn external(&self) -> bool;
    /// One attempt. Must be safe to repeat for the same delivery id (idempotent where the
    /// provider allows it).
    async fn send(&self, delivery: &OutboundDelivery) -> Result<SendOutcome, ChannelError>;
}
