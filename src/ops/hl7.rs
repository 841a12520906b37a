//! The HL7 archive as an operator reads it: `GET /v1/hl7/messages` (newest first, by status,
//! message type, control id and time) and `GET /v1/hl7/messages/{id}`, its segments decoded
//! with every field outside MSH masked unless `?reveal=true`, which is audited
//! (`hl7_revealed`, the caller's key as actor).

use serde::{Deserialize, Serialize};

use super::{Ops, Page, cursor_after, page_params};
use crate::messages::rfc3339;
use crate::service::{FieldError, ServiceError};
use crate::store::{AuditEntry, Hl7Row};

/// `?status=&type=&control_id=&since=&until=&cursor=&limit=` of `GET /v1/hl7/messages`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Hl7Query {
    /// received, applied, error or rejected.
    pub status: Option<String>,
    /// A message type (`SIU^S12`) or its prefix (`SIU`).
    #[serde(rename = "type")]
    pub message_type: Option<String>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// Received at or after, RFC 3339.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Received before, RFC 3339.
    #[param(format = DateTime)]
    pub until: Option<String>,
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// One archived message, without its content.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hl7Item {
    pub id: String,
    pub control_id: Option<String>,
    pub message_type: Option<String>,
    /// received, applied, error or rejected.
    pub status: String,
    /// Why it was not applied, for a person.
    pub error: Option<String>,
    /// The ACK we answered.
    pub ack: Option<String>,
    pub attempts: i64,
    /// RFC 3339 (UTC).
    pub received_at: String,
}

/// A page of the archive, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hl7List {
    pub messages: Vec<Hl7Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One archived message with its segments.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hl7MessageView {
    #[serde(flatten)]
    pub message: Hl7Item,
    /// Whether the fields are shown (`?reveal=true`, audited) or masked (`***`).
    pub revealed: bool,
    /// Each segment as `[name, field 1, field 2, …]` (MSH from MSH-2 on).
    pub segments: Vec<Vec<String>>,
}

const STATUSES: [&str; 4] = ["received", "applied", "error", "rejected"];
const MASK: &str = "***";

fn item(row: &Hl7Row) -> Hl7Item {
    Hl7Item {
        id: row.id.clone(),
        control_id: row.control_id.clone(),
        message_type: row.message_type.clone(),
        status: row.status.clone(),
        error: row.error.clone(),
        ack: row.ack.clone(),
        attempts: row.attempts,
        received_at: rfc3339(row.received_at),
    }
}

/// The segments of a message (CR, LF or CRLF between them), each split at its field
/// separator (MSH-1); outside MSH every non-empty field is masked unless `reveal`.
pub fn segments(raw: &[u8], reveal: bool) -> Vec<Vec<String>> {
    let text = String::from_utf8_lossy(raw);
    let separator = text
        .strip_prefix("MSH")
        .and_then(|rest| rest.chars().next())
        .unwrap_or('|');
    text.split(['\r', '\n'])
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields: Vec<String> = line.split(separator).map(str::to_string).collect();
            if !reveal && fields.first().map(String::as_str) != Some("MSH") {
                for field in fields.iter_mut().skip(1) {
                    if !field.is_empty() {
                        *field = MASK.to_string();
                    }
                }
            }
            fields
        })
        .collect()
}

impl Ops {
    /// `GET /v1/hl7/messages`
    pub async fn hl7_messages(
        &self,
        organization_id: &str,
        query: &Hl7Query,
    ) -> Result<Hl7List, ServiceError> {
        let mut errors = Vec::new();
        if let Some(status) = &query.status
            && !STATUSES.contains(&status.as_str())
        {
            errors.push(FieldError::parameter(
                "status",
                "received, applied, error or rejected",
            ));
        }
        let Page {
            since,
            until,
            after,
            limit,
        } = page_params(
            query.since.as_deref(),
            query.until.as_deref(),
            query.cursor.as_deref(),
            query.limit,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let rows = self
            .store
            .hl7()
            .page(
                organization_id,
                query.status.as_deref(),
                query.message_type.as_deref(),
                query.control_id.as_deref(),
                since,
                until,
                after,
                limit,
            )
            .await?;
        let next_cursor = cursor_after(
            rows.len(),
            limit,
            rows.last().map(|r| (r.received_at, r.id.as_str())),
        );
        Ok(Hl7List {
            messages: rows.iter().map(item).collect(),
            next_cursor,
        })
    }

    /// `GET /v1/hl7/messages/{id}`: masked, or revealed to `actor` with an audit row first.
    pub async fn hl7_message(
        &self,
        organization_id: &str,
        id: &str,
        reveal: bool,
        actor: &str,
    ) -> Result<Hl7MessageView, ServiceError> {
        let row = self
            .store
            .hl7()
            .of_organization(organization_id, id)
            .await?
            .ok_or(ServiceError::NotFound("HL7 message"))?;
        let raw = self.keyring.open(&row.raw, &row.id)?;
        if reveal {
            self.store
                .audit()
                .record(&AuditEntry {
                    organization_id: organization_id.to_string(),
                    action: "hl7_revealed".into(),
                    actor: actor.to_string(),
                    patient_id: None,
                    message_id: None,
                    delivery_id: None,
                    channel: Some("hl7".into()),
                    recipient: None,
                    outcome: None,
                    detail: Some(row.id.clone()),
                })
                .await?;
        }
        Ok(Hl7MessageView {
            message: item(&row),
            revealed: reveal,
            segments: segments(&raw, reveal),
        })
    }
}

/// The body of `POST /v1/hl7/messages/reprocess`: which archived messages to run again.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hl7ReprocessFilter {
    /// error (the default), rejected or received.
    pub status: Option<String>,
    /// Received at or after, RFC 3339.
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Received before, RFC 3339.
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

/// What a reprocess did: each message with its new outcome.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hl7Reprocessed {
    pub reprocessed: usize,
    pub messages: Vec<Hl7Item>,
}

/// The most archived messages one bulk reprocess takes (the caller repeats for more).
pub const MAX_REPROCESS_BATCH: i64 = 1000;

impl Ops {
    fn intake(&self) -> Result<std::sync::Arc<crate::hl7::processor::Hl7Processor>, ServiceError> {
        self.hl7
            .0
            .get()
            .cloned()
            .ok_or_else(|| ServiceError::Refused {
                refusal: crate::service::Refusal::Hl7NotListening,
                detail:
                    "this daemon runs no HL7 listener ([hl7] listen): nothing to reprocess with"
                        .into(),
            })
    }

    /// Runs archived messages through the listener's intake again (its control-id handling
    /// keeps it idempotent), records the new outcomes, and audits each (`hl7_reprocessed`).
    async fn reprocess_rows(
        &self,
        organization_id: &str,
        actor: &str,
        ids: Vec<String>,
    ) -> Result<Hl7Reprocessed, ServiceError> {
        let intake = self.intake()?;
        let mut messages = Vec::with_capacity(ids.len());
        for id in ids {
            let outcome = intake.reprocess(&id).await.map_err(|e| match e {
                crate::hl7::processor::Hl7Error::Store(e) => ServiceError::from(e),
                other => ServiceError::Internal(other.to_string()),
            })?;
            self.store
                .audit()
                .record(&AuditEntry {
                    organization_id: organization_id.to_string(),
                    action: "hl7_reprocessed".into(),
                    actor: actor.to_string(),
                    channel: Some("hl7".into()),
                    outcome: Some(outcome.code.as_str().to_string()),
                    detail: Some(id.clone()),
                    ..Default::default()
                })
                .await?;
            let row = self.store.hl7().get(&id).await?;
            messages.push(item(&row));
        }
        Ok(Hl7Reprocessed {
            reprocessed: messages.len(),
            messages,
        })
    }

    /// `POST /v1/hl7/messages/{id}/reprocess`
    pub async fn hl7_reprocess(
        &self,
        organization_id: &str,
        id: &str,
        actor: &str,
    ) -> Result<Hl7Reprocessed, ServiceError> {
        self.store
            .hl7()
            .of_organization(organization_id, id)
            .await?
            .ok_or(ServiceError::NotFound("HL7 message"))?;
        self.reprocess_rows(organization_id, actor, vec![id.to_string()])
            .await
    }

    /// `POST /v1/hl7/messages/reprocess`: every message of the organization in `status`
    /// (default `error`) received in the range, up to [`MAX_REPROCESS_BATCH`].
    pub async fn hl7_reprocess_all(
        &self,
        organization_id: &str,
        filter: &Hl7ReprocessFilter,
        actor: &str,
    ) -> Result<Hl7Reprocessed, ServiceError> {
        let mut errors = Vec::new();
        let status = filter.status.as_deref().unwrap_or("error");
        if !["error", "rejected", "received"].contains(&status) {
            errors.push(FieldError::pointer(
                "/status",
                "error, rejected or received",
            ));
        }
        let mut time = |name: &str, value: Option<&String>| {
            let text = value?;
            match chrono::DateTime::parse_from_rfc3339(text) {
                Ok(t) => Some(t.timestamp_millis()),
                Err(_) => {
                    errors.push(FieldError::pointer(
                        format!("/{name}"),
                        "not an RFC 3339 time",
                    ));
                    None
                }
            }
        };
        let since = time("since", filter.since.as_ref());
        let until = time("until", filter.until.as_ref());
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        self.intake()?;
        let rows = self
            .store
            .hl7()
            .page(
                organization_id,
                Some(status),
                None,
                None,
                since,
                until,
                None,
                MAX_REPROCESS_BATCH,
            )
            .await?;
        // Oldest first: a later message about the same appointment is applied after.
        let ids = rows.iter().rev().map(|r| r.id.clone()).collect();
        self.reprocess_rows(organization_id, actor, ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn fields_outside_msh_are_masked_unless_revealed() {
        let raw = b"MSH|^~\\&|EHR|North|SB|North|20261128||SIU^S12|c1|P|2.5\rPID|1||MRN-7||Doe^Jane||19700101|F\r\rSCH|A1||||||Checkup\n";
        let masked = segments(raw, false);
        assert_eq!(masked.len(), 3);
        assert_eq!(masked[0][9], "c1", "MSH is shown");
        assert_eq!(masked[1][0], "PID");
        assert_eq!(masked[1][5], "***");
        assert_eq!(masked[1][2], "", "an empty field stays empty");
        assert!(!masked.concat().iter().any(|f| f.contains("Doe")));
        let revealed = segments(raw, true);
        assert_eq!(revealed[1][5], "Doe^Jane");
    }
}
