//! The unmatched work queue through the API: list items by status, show one with its text
//! (for the person resolving it), and file one into a patient's thread. The types here are
//! the wire shapes of `GET /v1/inbound`, `GET /v1/inbound/{id}` and
//! `POST /v1/inbound/{id}/resolve`.

use serde::{Deserialize, Serialize};

use super::{InboundService, InboundSms};
use crate::service::{Refusal, ServiceError};
use crate::store::{InboundRow, StoreError};

/// Most items on one page.
pub const MAX_PAGE: i64 = 1000;

/// The states an inbound item passes through (`?status=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundStatus {
    /// Recorded, not yet handled (or handling failed half-way).
    Received,
    /// From an unknown or ambiguous sender: waiting for a person.
    Unmatched,
    /// Filed into a patient's thread.
    Filed,
    /// A keyword or reminder answer, applied.
    Processed,
    Quarantined,
    Resolved,
}

impl InboundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundStatus::Received => "received",
            InboundStatus::Unmatched => "unmatched",
            InboundStatus::Filed => "filed",
            InboundStatus::Processed => "processed",
            InboundStatus::Quarantined => "quarantined",
            InboundStatus::Resolved => "resolved",
        }
    }
}

/// An inbound item as the API shows it. Times are unix epoch milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct InboundItemView {
    pub id: String,
    pub organization_id: String,
    /// sms (fax and Direct later).
    pub channel: String,
    /// The sender's address (E.164 for SMS).
    pub sender: String,
    /// The address it was sent to.
    pub recipient: Option<String>,
    pub status: String,
    /// Why it is unmatched or quarantined.
    pub reason: Option<String>,
    pub patient_id: Option<String>,
    pub thread_id: Option<String>,
    /// The inbound message it was filed as.
    pub message_id: Option<String>,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The text (only when one item is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Media URLs the provider gave (only when one item is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<Vec<String>>,
}

impl From<InboundRow> for InboundItemView {
    fn from(row: InboundRow) -> Self {
        Self {
            id: row.id,
            organization_id: row.organization_id,
            channel: row.channel,
            sender: row.sender,
            recipient: row.recipient,
            status: row.status,
            reason: row.reason,
            patient_id: row.patient_id,
            thread_id: row.thread_id,
            message_id: row.message_id,
            connector: row.connector,
            provider_ref: row.provider_ref,
            created_at: row.created_at,
            updated_at: row.updated_at,
            body: None,
            media: None,
        }
    }
}

/// `GET /v1/inbound`.
#[derive(Debug, Clone, Serialize)]
pub struct InboundList {
    pub items: Vec<InboundItemView>,
}

/// `POST /v1/inbound/{id}/resolve`: whose item it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The patient's external id.
    pub patient: String,
}

/// The item, filed.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub id: String,
    /// Always `filed`.
    pub status: &'static str,
    /// The patient's thread it was filed into.
    pub thread_id: String,
}

impl InboundService {
    /// Up to `limit` (1 to [`MAX_PAGE`]) items in `status`.
    pub async fn list(
        &self,
        organization_id: &str,
        status: InboundStatus,
        limit: i64,
    ) -> Result<InboundList, ServiceError> {
        let items = self
            .store
            .inbound_items(organization_id, status.as_str(), limit.clamp(1, MAX_PAGE))
            .await?;
        Ok(InboundList {
            items: items.into_iter().map(InboundItemView::from).collect(),
        })
    }

    /// One item with its text (left out when it cannot be opened).
    pub async fn show(
        &self,
        organization_id: &str,
        item_id: &str,
    ) -> Result<InboundItemView, ServiceError> {
        let item = self.item(organization_id, item_id).await?;
        let content = self
            .keyring
            .open(&item.raw, &item.id)
            .ok()
            .and_then(|raw| serde_json::from_slice::<InboundSms>(&raw).ok());
        let mut view = InboundItemView::from(item);
        if let Some(sms) = content {
            view.body = Some(sms.body);
            view.media = Some(sms.media);
        }
        Ok(view)
    }

    /// A person files an item for the patient the body names (by external id).
    pub async fn resolve_for(
        &self,
        organization_id: &str,
        item_id: &str,
        request: ResolveRequest,
    ) -> Result<Resolved, ServiceError> {
        let item = self.item(organization_id, item_id).await?;
        if item.status == "filed" {
            return Err(ServiceError::Refused {
                refusal: Refusal::InboundAlreadyFiled,
                detail: "item is already filed".into(),
            });
        }
        let patient = match self
            .store
            .patient_by_external_id(organization_id, &request.patient)
            .await
        {
            Err(StoreError::NotFound) => {
                return Err(ServiceError::invalid("/patient", "patient not found"));
            }
            other => other?,
        };
        let thread_id = self.resolve(organization_id, item_id, &patient.id).await?;
        Ok(Resolved {
            id: item_id.to_string(),
            status: "filed",
            thread_id,
        })
    }

    async fn item(&self, organization_id: &str, item_id: &str) -> Result<InboundRow, ServiceError> {
        match self.store.inbound_item(organization_id, item_id).await {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("inbound item")),
            other => Ok(other?),
        }
    }
}

impl From<super::InboundError> for ServiceError {
    fn from(error: super::InboundError) -> Self {
        use super::InboundError as E;
        match error {
            E::Store(e) => e.into(),
            E::Crypto(e) => ServiceError::Crypto(e),
            E::Template(e) => ServiceError::Internal(format!("template: {e}")),
        }
    }
}
