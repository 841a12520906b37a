//! What operators' endpoints ask: readiness, the figures `/metrics` shows, and the audit trail
//! of refusals at the edges (a provider webhook whose signature failed).

use crate::service::ServiceError;
use crate::store::{AuditEntry, Store, StoreError};

/// Delivery figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFigures {
    /// (channel, status, count), ordered.
    pub by_channel_and_status: Vec<(String, String, i64)>,
    /// Deliveries that exhausted their attempts and were not requeued.
    pub dead_letters: i64,
}

/// A refused provider webhook, for the audit trail.
#[derive(Debug, Clone)]
pub struct RefusedWebhook<'a> {
    /// The connector's organization (a slug), if it has one.
    pub connector_owner: Option<&'a str>,
    pub connector: &'a str,
    pub channel: &'a str,
    /// `status` or `inbound`.
    pub kind: &'a str,
    /// Why (no PHI: the signature check's reason).
    pub reason: String,
}

/// The operations service.
#[derive(Clone)]
pub struct Ops {
    pub store: Store,
}

impl Ops {
    /// Whether the database answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.store.ping().await?)
    }

    pub async fn delivery_figures(&self) -> Result<DeliveryFigures, ServiceError> {
        Ok(DeliveryFigures {
            by_channel_and_status: self.store.deliveries().counts().await?,
            dead_letters: self.store.deliveries().dead_letter_count().await?,
        })
    }

    /// Audits a refused webhook against the connector's organization (when it has one that
    /// exists; a connector of no organization leaves only the log line the edge writes). Best
    /// effort: a failure to audit is logged, the refusal stands.
    pub async fn webhook_refused(&self, refused: RefusedWebhook<'_>) {
        let Some(slug) = refused.connector_owner else {
            return;
        };
        let organization_id = match self.store.organizations().by_slug(slug).await {
            Ok(org) => org.id,
            Err(StoreError::NotFound) => return,
            Err(e) => {
                tracing::warn!(error = %e, "refused webhook not audited");
                return;
            }
        };
        let entry = AuditEntry {
            organization_id,
            action: "webhook_refused".into(),
            actor: format!("webhook:{}", refused.connector),
            channel: Some(refused.channel.to_string()),
            outcome: Some("forbidden".into()),
            detail: Some(format!("{}: {}", refused.kind, refused.reason)),
            ..Default::default()
        };
        if let Err(e) = self.store.audit().record(&entry).await {
            tracing::warn!(error = %e, "refused webhook not audited");
        }
    }
}
