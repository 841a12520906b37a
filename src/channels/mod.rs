//! Channels: the `Channel` trait every connector implements, what a send attempt carries and
//! how it can end. One module per channel; `outbox` is the local sink that is the embedded
//! default for every channel.
//!
//! A channel never sees HTTP, HL7 or the store: the queue worker hands it an
//! [`OutboundDelivery`] (already decrypted, consent already checked) and records the outcome.

pub mod direct;
pub mod email;
pub mod outbox;

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::DeliveryStatus;

/// The names of the logical channels a delivery can use ([`crate::domain::Channel::NAMES`]).
pub const CHANNELS: [&str; 5] = crate::domain::Channel::NAMES;

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

impl Sender {
    /// The organization's stored name and configured settings.
    pub async fn load(
        store: &crate::store::Store,
        config: &crate::config::Config,
        organization_id: &str,
    ) -> Result<Self, crate::store::StoreError> {
        let org = store.organization(organization_id).await?;
        let settings = config.organization(&org.slug);
        Ok(Self {
            organization_id: org.id,
            slug: org.slug,
            name: settings.display_name.clone().unwrap_or(org.name),
            settings,
        })
    }
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

/// The configured connectors by name.
#[derive(Clone, Default)]
pub struct Connectors {
    by_name: HashMap<String, Arc<dyn Channel>>,
    http: HashMap<String, Arc<crate::connectors::HttpConnector>>,
}

impl Connectors {
    /// Registers a manifest-driven provider (also reachable for webhooks).
    pub fn insert_http(&mut self, connector: Arc<crate::connectors::HttpConnector>) {
        self.http
            .insert(connector.name().to_string(), connector.clone());
        self.by_name.insert(connector.name().to_string(), connector);
    }

    /// The HTTP provider with this name (webhooks, reconciliation).
    pub fn http(&self, name: &str) -> Option<Arc<crate::connectors::HttpConnector>> {
        self.http.get(name).cloned()
    }

    pub fn http_connectors(&self) -> Vec<Arc<crate::connectors::HttpConnector>> {
        self.http.values().cloned().collect()
    }

    pub fn insert(&mut self, channel: Arc<dyn Channel>) {
        self.by_name.insert(channel.name().to_string(), channel);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}
