//! The unmatched work queue through the API: list items by status (with the candidates
//! matching proposed), show one with its text and steps (for the person deciding), file one
//! into a patient's thread (`resolve`), move a filed one to another patient (`reassign`) or
//! set one aside (`dismiss`). A person's decision is audited (who: the API key; from and to
//! patient and thread; the reason) in the transaction that makes it, with its step and event.
//! The types here are the wire shapes of `GET /v1/inbound`, `GET /v1/inbound/{id}` and
//! `POST /v1/inbound/{id}/{resolve,reassign,dismiss}`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::InboundService;
use crate::direct::mdn::{MdnStatuses, MdnView};
use crate::intake::{Envelope, Parsed, StoredCandidate, source_for};
use crate::service::{Refusal, ServiceError};
use crate::store::{AuditEntry, InboundRow, ReassignInbound, StepRow, StoreError};

/// Most items on one page.
pub const MAX_PAGE: i64 = 1000;

/// Longest reason a person may give (characters).
pub const MAX_REASON: usize = 1000;

/// The states an inbound item passes through (`?status=`).
///
/// `received` → `filed` | `unmatched` | `processed` (the pipeline); `unmatched` → `filed`
/// (resolve, or reprocess) | `dismissed` (a person); `filed` stays `filed` when reassigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InboundStatus {
    /// Recorded, not yet handled (or handling failed half-way).
    Received,
    /// No patient, or more than one: waiting for a person.
    Unmatched,
    /// Filed into a patient's thread.
    Filed,
    /// A keyword or reminder answer, applied.
    Processed,
    /// Set aside by a person, with a reason.
    Dismissed,
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
            InboundStatus::Dismissed => "dismissed",
            InboundStatus::Quarantined => "quarantined",
            InboundStatus::Resolved => "resolved",
        }
    }
}

/// A patient matching proposed for an unmatched item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CandidateView {
    pub patient_id: String,
    /// The patient's external id (what `resolve` takes).
    pub external_id: Option<String>,
    /// The rule that proposed it: `identifier`, `demographics` or `contact`.
    pub method: String,
}

/// An inbound item as the API shows it. Times are unix epoch milliseconds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InboundItemView {
    pub id: String,
    pub organization_id: String,
    /// `sms`, `fax`, `direct`, `document`.
    pub channel: String,
    /// The sender's address (E.164 for SMS).
    pub sender: String,
    /// The address it was sent to.
    pub recipient: Option<String>,
    pub status: String,
    /// Why it is unmatched, processed or dismissed.
    pub reason: Option<String>,
    pub patient_id: Option<String>,
    pub thread_id: Option<String>,
    /// The inbound message it was filed as.
    pub message_id: Option<String>,
    pub connector: Option<String>,
    pub provider_ref: Option<String>,
    /// The matching rule that chose the patient (`reply`, `identifier`, `demographics`,
    /// `contact`), or `manual` when a person did.
    pub match_method: Option<String>,
    /// Who matching proposed when it could not decide, with the rule that proposed each.
    pub candidates: Vec<CandidateView>,
    /// The trust check a quarantined Direct message failed (`chain`, `revocation`, …); the
    /// reason says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_check: Option<String>,
    /// When a quarantined item is processed again by itself (its check could not be made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The text (only when one item is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Media URLs the provider gave (only when one item is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<Vec<String>>,
    /// The files it carries (only when one item is shown): a fax's document, a Direct
    /// message's attachments — what a person looks at before filing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<ItemAttachmentView>>,
    /// The pipeline's steps, in order (only when one item is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    /// Direct: the MDNs we owe the sender (only when one item is shown, for a `direct` item
    /// or one with an MDN queued): `{processed, dispatched, failed}`, each `null` while none
    /// is owed, else `{disposition, status, attempts, reason, sent_at, message_id}` —
    /// `status` `queued` (waiting for its first or next attempt), `sent` (the HISP accepted
    /// it; `sent_at`) or `failed` (refused by the HISP or no certificate for the sender, or
    /// given up after 12 attempts); `attempts` made so far; `reason` why the last attempt
    /// failed (the HISP's answer, addresses redacted); `message_id` the MDN's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdn: Option<MdnStatuses>,
}

/// A file an inbound item carries, as the item is shown (the bytes are filed with the message
/// when the item is filed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemAttachmentView {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// One step of an item: `received`, `parsed`, `matched`, `filed` | `unmatched` | `processed`,
/// `acknowledged`; `reprocess`; a person's `resolved`, `reassigned`, `dismissed`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepView {
    pub step: String,
    /// The item's status after the step.
    pub status: String,
    /// Ids and codes: the match method, candidate count, who decided.
    pub detail: serde_json::Value,
    pub created_at: i64,
}

impl From<StepRow> for StepView {
    fn from(row: StepRow) -> Self {
        Self {
            detail: row
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(serde_json::Value::Null),
            step: row.step,
            status: row.status,
            created_at: row.created_at,
        }
    }
}

impl InboundItemView {
    fn new(row: InboundRow, external_ids: &HashMap<String, String>) -> Self {
        let candidates = stored_candidates(&row)
            .into_iter()
            .map(|c| CandidateView {
                external_id: external_ids.get(&c.patient_id).cloned(),
                patient_id: c.patient_id,
                method: c.method,
            })
            .collect();
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
            match_method: row.match_method,
            candidates,
            quarantine_check: row.quarantine_check,
            retry_at: row.retry_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            body: None,
            media: None,
            attachments: None,
            steps: None,
            mdn: None,
        }
    }
}

fn stored_candidates(row: &InboundRow) -> Vec<StoredCandidate> {
    row.candidates
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// `GET /v1/inbound`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InboundList {
    pub items: Vec<InboundItemView>,
}

/// `POST /v1/inbound/{id}/resolve`: whose item it is.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The patient's external id.
    pub patient: String,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The item, filed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    pub id: String,
    /// Always `filed`.
    pub status: &'static str,
    /// The patient's thread it was filed into.
    pub thread_id: String,
}

/// `POST /v1/inbound/{id}/reassign`: whose item it really is.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignRequest {
    /// The patient's external id.
    pub patient: String,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/inbound/{id}/dismiss`: why it is set aside (required).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissRequest {
    #[serde(default)]
    #[schema(min_length = 1)]
    pub reason: Option<String>,
}

/// The item, dismissed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Dismissed {
    pub id: String,
    /// Always `dismissed`.
    pub status: &'static str,
}

impl InboundService {
    /// Up to `limit` (1 to [`MAX_PAGE`]) items in `status`, with their candidates.
    pub async fn list(
        &self,
        organization_id: &str,
        status: InboundStatus,
        limit: i64,
    ) -> Result<InboundList, ServiceError> {
        let items = self
            .store
            .inbound()
            .items(organization_id, status.as_str(), limit.clamp(1, MAX_PAGE))
            .await?;
        let mut ids: Vec<String> = items
            .iter()
            .flat_map(stored_candidates)
            .map(|c| c.patient_id)
            .collect();
        ids.sort();
        ids.dedup();
        let external_ids: HashMap<String, String> = self
            .store
            .patients()
            .external_ids(organization_id, &ids)
            .await?
            .into_iter()
            .collect();
        Ok(InboundList {
            items: items
                .into_iter()
                .map(|row| InboundItemView::new(row, &external_ids))
                .collect(),
        })
    }

    /// Quarantined Direct messages of the organization, newest first (`GET
    /// /v1/direct/quarantine`, admin scope): each with its failing check and reason.
    pub async fn direct_quarantine(
        &self,
        organization_id: &str,
        limit: i64,
    ) -> Result<InboundList, ServiceError> {
        let items = self
            .store
            .direct()
            .quarantined(Some(organization_id), limit.clamp(1, MAX_PAGE))
            .await?;
        Ok(InboundList {
            items: items
                .into_iter()
                .map(|row| InboundItemView::new(row, &HashMap::new()))
                .collect(),
        })
    }

    /// Releases a quarantined Direct message of the organization (`POST
    /// /v1/direct/quarantine/{id}/release`, admin scope; the console's Release button): its
    /// trust checks run again — after an anchor was added, a CRL came back — and it is filed
    /// and answered if it now passes, else it stays quarantined with the new reason. Audited
    /// as `actor`.
    pub async fn release_quarantined(
        &self,
        organization_id: &str,
        item_id: &str,
        actor: &str,
    ) -> Result<InboundItemView, ServiceError> {
        use crate::direct::inbound::DirectInboundError;
        let Some(direct) = &self.direct else {
            return Err(ServiceError::Refused {
                refusal: Refusal::InboundWrongState,
                detail: "this process does not receive Direct messages".into(),
            });
        };
        match direct.release(Some(organization_id), item_id, actor).await {
            Ok(_) => {}
            Err(DirectInboundError::Store(e)) => return Err(e.into()),
            Err(DirectInboundError::Crypto(e)) => return Err(e.into()),
            Err(DirectInboundError::NotReleasable(detail)) => {
                return Err(ServiceError::Refused {
                    refusal: Refusal::InboundWrongState,
                    detail,
                });
            }
            Err(DirectInboundError::UnknownConnector(name)) => {
                return Err(ServiceError::Refused {
                    refusal: Refusal::InboundWrongState,
                    detail: format!(
                        "the item came through Direct connector {name:?}, which is no longer set up"
                    ),
                });
            }
            Err(e @ DirectInboundError::Intake(_)) => {
                return Err(ServiceError::Internal(e.to_string()));
            }
        }
        let item = self.store.inbound().item(organization_id, item_id).await?;
        Ok(InboundItemView::new(item, &HashMap::new()))
    }

    /// One item with its text and steps (the text left out when it cannot be read).
    pub async fn show(
        &self,
        organization_id: &str,
        item_id: &str,
    ) -> Result<InboundItemView, ServiceError> {
        let item = self.item(organization_id, item_id).await?;
        let content = self.read(&item);
        let ids: Vec<String> = stored_candidates(&item)
            .into_iter()
            .map(|c| c.patient_id)
            .collect();
        let external_ids: HashMap<String, String> = self
            .store
            .patients()
            .external_ids(organization_id, &ids)
            .await?
            .into_iter()
            .collect();
        let steps = self.store.inbound().steps(organization_id, item_id).await?;
        let mut view = InboundItemView::new(item, &external_ids);
        if let Some(parsed) = content {
            view.attachments = Some(
                parsed
                    .attachments
                    .iter()
                    .map(|a| ItemAttachmentView {
                        filename: a.filename.clone(),
                        content_type: a.content_type.clone(),
                        size: a.bytes.len(),
                        sha256: crate::attachments::sha256_hex(&a.bytes),
                    })
                    .collect(),
            );
            view.body = Some(parsed.body);
            view.media = Some(parsed.links);
        }
        view.steps = Some(steps.into_iter().map(StepView::from).collect());
        let mdns = self
            .store
            .direct()
            .mdns_of_item(organization_id, item_id)
            .await?;
        if view.channel == "direct" || !mdns.is_empty() {
            let views: Vec<MdnView> = mdns.into_iter().map(MdnView::from).collect();
            view.mdn = Some(MdnStatuses::from(views));
        }
        Ok(view)
    }

    /// The stored raw item, parsed by its source (without recording a step).
    fn read(&self, item: &InboundRow) -> Option<Parsed> {
        let source = source_for(&item.channel)?;
        // What security processing opened it to, when it went through one (Direct); a
        // quarantined Direct message has none and shows no text.
        let raw = match &item.opened {
            Some(opened) => self
                .keyring
                .open(opened, &crate::intake::opened_context(&item.id))
                .ok()?,
            None if item.channel == "direct" => return None,
            None => self.keyring.open(&item.raw, &item.id).ok()?,
        };
        source.parse(&raw).ok()
    }

    /// A person (`actor`: `api_key:<key id>`) files an unmatched item for the patient the body
    /// names (by external id).
    pub async fn resolve_for(
        &self,
        organization_id: &str,
        item_id: &str,
        request: ResolveRequest,
        actor: &str,
    ) -> Result<Resolved, ServiceError> {
        let reason = optional_reason(request.reason.as_deref())?;
        let item = self.item(organization_id, item_id).await?;
        match item.status.as_str() {
            "unmatched" | "received" => {}
            "filed" => {
                return Err(ServiceError::Refused {
                    refusal: Refusal::InboundAlreadyFiled,
                    detail: "item is already filed; reassign it instead".into(),
                });
            }
            other => return Err(wrong_state(other, "resolved")),
        }
        let patient = self.patient(organization_id, &request.patient).await?;
        let source = source_for(&item.channel)
            .ok_or_else(|| ServiceError::Internal(format!("no source for {}", item.channel)))?;
        let parsed = self
            .read(&item)
            .ok_or_else(|| ServiceError::Internal("the stored item cannot be read".into()))?;
        let audit = AuditEntry {
            organization_id: organization_id.to_string(),
            action: "inbound_resolved".into(),
            actor: actor.to_string(),
            patient_id: Some(patient.clone()),
            channel: Some(item.channel.clone()),
            outcome: Some("filed".into()),
            detail: Some(
                serde_json::json!({
                    "inbound_item_id": item.id, "from_patient_id": null, "from_thread_id": null,
                    "to_patient_id": patient, "reason": reason,
                })
                .to_string(),
            ),
            ..AuditEntry::default()
        };
        let detail = serde_json::json!({"by": actor, "patient_id": patient}).to_string();
        let filed = self
            .intake()
            .file_for(
                source,
                &Envelope::from(&item),
                &patient,
                None,
                &parsed,
                "resolved",
                detail,
                Some(audit),
            )
            .await;
        let (thread_id, message_id) = match filed {
            Err(crate::intake::IntakeError::Store(StoreError::Conflict(detail))) => {
                return Err(wrong_state(&detail, "resolved"));
            }
            other => other.map_err(super::InboundError::from)?,
        };
        info!(inbound_item_id = %item_id, %thread_id, %message_id, actor = %actor, "inbound item resolved");
        Ok(Resolved {
            id: item_id.to_string(),
            status: "filed",
            thread_id,
        })
    }

    /// A person moves a filed item's message to another patient's open thread.
    pub async fn reassign(
        &self,
        organization_id: &str,
        item_id: &str,
        request: ReassignRequest,
        actor: &str,
    ) -> Result<Resolved, ServiceError> {
        let reason = optional_reason(request.reason.as_deref())?;
        let item = self.item(organization_id, item_id).await?;
        let (Some(from_patient), Some(message_id), "filed") = (
            item.patient_id.clone(),
            item.message_id.clone(),
            item.status.as_str(),
        ) else {
            return Err(wrong_state(&item.status, "reassigned"));
        };
        let patient = self.patient(organization_id, &request.patient).await?;
        if patient == from_patient {
            return Err(ServiceError::invalid(
                "/patient",
                "the item is already filed for this patient",
            ));
        }
        let to_thread = self
            .store
            .messages()
            .open_thread_of(organization_id, &patient)
            .await?
            .map(|t| t.id);
        let mut audit = AuditEntry {
            organization_id: organization_id.to_string(),
            action: "inbound_reassigned".into(),
            actor: actor.to_string(),
            patient_id: Some(patient.clone()),
            message_id: Some(message_id.clone()),
            channel: Some(item.channel.clone()),
            outcome: Some("filed".into()),
            ..AuditEntry::default()
        };
        // A thread opened for the move is named here, so that the audit names it too.
        let thread_id = to_thread
            .clone()
            .unwrap_or_else(|| crate::store::new_id("thr"));
        audit.detail = Some(
            serde_json::json!({
                "inbound_item_id": item.id, "from_patient_id": from_patient,
                "from_thread_id": item.thread_id, "to_patient_id": patient,
                "to_thread_id": thread_id, "reason": reason,
            })
            .to_string(),
        );
        let step = serde_json::json!({
            "by": actor, "from_patient_id": from_patient, "to_patient_id": patient,
        });
        let moved = self
            .store
            .inbound()
            .reassign(&ReassignInbound {
                organization_id: organization_id.to_string(),
                item_id: item.id.clone(),
                message_id: message_id.clone(),
                from_patient_id: from_patient,
                to_patient_id: patient,
                to_thread_id: thread_id,
                new_thread: to_thread.is_none(),
                detail: step.to_string(),
                audit,
            })
            .await;
        let thread_id = match moved {
            Err(StoreError::Conflict(detail)) => return Err(wrong_state(&detail, "reassigned")),
            other => other?,
        };
        info!(inbound_item_id = %item_id, %thread_id, %message_id, actor = %actor, "inbound item reassigned");
        Ok(Resolved {
            id: item_id.to_string(),
            status: "filed",
            thread_id,
        })
    }

    /// A person sets an unmatched item aside, saying why.
    pub async fn dismiss(
        &self,
        organization_id: &str,
        item_id: &str,
        request: DismissRequest,
        actor: &str,
    ) -> Result<Dismissed, ServiceError> {
        let reason = match optional_reason(request.reason.as_deref())? {
            Some(reason) => reason,
            None => return Err(ServiceError::invalid("/reason", "a reason is required")),
        };
        let item = self.item(organization_id, item_id).await?;
        if !matches!(item.status.as_str(), "unmatched" | "received") {
            return Err(wrong_state(&item.status, "dismissed"));
        }
        let audit = AuditEntry {
            organization_id: organization_id.to_string(),
            action: "inbound_dismissed".into(),
            actor: actor.to_string(),
            channel: Some(item.channel.clone()),
            outcome: Some("dismissed".into()),
            detail: Some(
                serde_json::json!({
                    "inbound_item_id": item.id, "from_patient_id": item.patient_id,
                    "from_thread_id": item.thread_id, "to_patient_id": null,
                    "to_thread_id": null, "reason": reason,
                })
                .to_string(),
            ),
            ..AuditEntry::default()
        };
        let step = serde_json::json!({"by": actor}).to_string();
        match self
            .store
            .inbound()
            .dismiss(organization_id, item_id, &reason, &step, &audit)
            .await
        {
            Err(StoreError::Conflict(detail)) => return Err(wrong_state(&detail, "dismissed")),
            other => other?,
        }
        info!(inbound_item_id = %item_id, actor = %actor, "inbound item dismissed");
        Ok(Dismissed {
            id: item_id.to_string(),
            status: "dismissed",
        })
    }

    /// The patient (internal id) with this external id, or a 422 at `/patient`.
    async fn patient(
        &self,
        organization_id: &str,
        external_id: &str,
    ) -> Result<String, ServiceError> {
        match self
            .store
            .patients()
            .by_external_id(organization_id, external_id)
            .await
        {
            Err(StoreError::NotFound) => {
                Err(ServiceError::invalid("/patient", "patient not found"))
            }
            other => Ok(other?.id),
        }
    }

    async fn item(&self, organization_id: &str, item_id: &str) -> Result<InboundRow, ServiceError> {
        match self.store.inbound().item(organization_id, item_id).await {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("inbound item")),
            other => Ok(other?),
        }
    }
}

/// A reason, trimmed; empty is none; too long is a 422 at `/reason`.
fn optional_reason(reason: Option<&str>) -> Result<Option<String>, ServiceError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ServiceError::invalid(
            "/reason",
            format!("at most {MAX_REASON} characters"),
        ));
    }
    Ok(reason.map(str::to_string))
}

/// 409: the item is not in a state this decision applies to.
fn wrong_state(status: &str, verb: &str) -> ServiceError {
    ServiceError::Refused {
        refusal: Refusal::InboundWrongState,
        detail: format!("the item cannot be {verb} ({status})"),
    }
}

impl From<super::InboundError> for ServiceError {
    fn from(error: super::InboundError) -> Self {
        use super::InboundError as E;
        use crate::intake::IntakeError as I;
        match error {
            E::Store(e) | E::Intake(I::Store(e)) => e.into(),
            E::Crypto(e) | E::Intake(I::Crypto(e)) => ServiceError::Crypto(e),
            E::Template(e) => ServiceError::Internal(format!("template: {e}")),
            E::Intake(other) => ServiceError::Internal(other.to_string()),
            E::NotReprocessable(detail) => ServiceError::Refused {
                refusal: Refusal::InboundWrongState,
                detail,
            },
        }
    }
}

impl From<crate::intake::IntakeError> for ServiceError {
    fn from(error: crate::intake::IntakeError) -> Self {
        super::InboundError::from(error).into()
    }
}
