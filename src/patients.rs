//! Patients through the API: upsert demographics, contact points (replaced when given) and
//! consents (appended to the ledger), and read them back. The request and response types are
//! the wire shapes of `PUT`/`GET /v1/patients/{external_id}`. HL7 ADT feeds write the same
//! records through `hl7::processor` (one transaction with the archive row).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::messages::rfc3339;
use crate::service::{Checks, FieldError, ServiceError};
use crate::store::{ConsentInput, ContactPointInput, PatientInput, PatientRow, Store, StoreError};

/// Longest external id (the organization's own patient id, e.g. an MRN).
pub const MAX_EXTERNAL_ID: usize = 128;

/// `PUT /v1/patients/{external_id}`: the patient's demographics. Absent fields are cleared.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientRequest {
    #[serde(default)]
    pub family_name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    /// YYYY-MM-DD.
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub sex: Option<String>,
    /// BCP 47 / ISO 639 code, e.g. `en`, `es`.
    #[serde(default)]
    pub language: Option<String>,
    /// IANA zone, e.g. `America/Chicago`.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Replaces the patient's contact points when given; absent keeps them.
    #[serde(default)]
    pub contact_points: Option<Vec<ContactPointRequest>>,
    /// Appended to the consent ledger (never rewritten).
    #[serde(default)]
    pub consents: Vec<ConsentRequest>,
}

/// A way to reach the patient.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPointRequest {
    /// phone | sms | email | fax | direct
    pub system: String,
    pub value: String,
    /// home, work, mobile, …
    #[serde(default, rename = "use")]
    pub use_code: Option<String>,
    /// 1 = preferred; absent: the position in the list.
    #[serde(default)]
    pub rank: Option<i64>,
}

/// A consent-ledger entry.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// sms | email | fax | direct | `*` (the default).
    #[serde(default = "any")]
    pub channel: String,
    /// messaging | reminders | part2 | …
    pub purpose: String,
    /// The address the consent covers, or `*` (the default).
    #[serde(default = "any")]
    pub recipient: String,
    /// granted | revoked
    pub status: String,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn any() -> String {
    "*".into()
}

/// A patient as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientView {
    /// The gateway's id (`pat_…`).
    pub id: String,
    /// The organization's id for the patient.
    pub external_id: String,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub language: Option<String>,
    pub time_zone: Option<String>,
    /// Lowest rank first.
    pub contact_points: Vec<ContactPointView>,
    /// The consent ledger, oldest first.
    pub consents: Vec<ConsentView>,
    /// RFC 3339 (UTC).
    pub created_at: String,
    /// RFC 3339 (UTC).
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactPointView {
    pub system: String,
    pub value: String,
    #[serde(rename = "use")]
    pub use_code: Option<String>,
    pub rank: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    pub channel: String,
    pub purpose: String,
    pub recipient: String,
    pub status: String,
    /// api, hl7, sms (a keyword), …
    pub source: String,
    /// RFC 3339 (UTC).
    pub recorded_at: String,
    /// RFC 3339 (UTC), if the consent expires.
    pub expires_at: Option<String>,
}

/// The result of an upsert: the patient, and whether it was created.
#[derive(Debug, Clone)]
pub struct Upserted<T> {
    pub view: T,
    pub created: bool,
}

/// Patients of an organization.
#[derive(Clone)]
pub struct PatientService {
    pub store: Store,
    pub config: Arc<Config>,
}

impl PatientService {
    /// Creates or replaces the patient `external_id`.
    pub async fn upsert(
        &self,
        organization_id: &str,
        external_id: &str,
        request: PatientRequest,
    ) -> Result<Upserted<PatientView>, ServiceError> {
        let region = self.phone_region(organization_id).await?;
        let input = validate(external_id, request, &region)?;
        let (row, created) = self
            .store
            .patients()
            .upsert(organization_id, &input)
            .await?;
        Ok(Upserted {
            view: self.view_of(row).await?,
            created,
        })
    }

    /// The patient with contact points and consent ledger.
    pub async fn get(
        &self,
        organization_id: &str,
        external_id: &str,
    ) -> Result<PatientView, ServiceError> {
        let row = self.find(organization_id, external_id).await?;
        self.view_of(row).await
    }

    /// The patient row by the organization's external id (404 when absent).
    pub async fn find(
        &self,
        organization_id: &str,
        external_id: &str,
    ) -> Result<PatientRow, ServiceError> {
        match self
            .store
            .patients()
            .by_external_id(organization_id, external_id)
            .await
        {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("patient")),
            other => Ok(other?),
        }
    }

    /// The id of the patient a request body names by external id at `pointer`: a patient
    /// that does not exist is a field error there (422), not a missing resource.
    pub async fn referenced(
        &self,
        organization_id: &str,
        external_id: &str,
        pointer: &str,
    ) -> Result<String, ServiceError> {
        match self.find(organization_id, external_id).await {
            Ok(patient) => Ok(patient.id),
            Err(ServiceError::NotFound(_)) => Err(ServiceError::invalid(
                pointer,
                "no patient has this external id (PUT /v1/patients/{external_id} first)",
            )),
            Err(e) => Err(e),
        }
    }

    /// The region phone numbers of the organization are read in (`phone_region`).
    pub async fn phone_region(&self, organization_id: &str) -> Result<String, ServiceError> {
        let slug = self.store.organizations().get(organization_id).await?.slug;
        Ok(self.config.organization(&slug).phone_region)
    }

    async fn view_of(&self, patient: PatientRow) -> Result<PatientView, ServiceError> {
        let points = self.store.patients().contact_points(&patient.id).await?;
        let consents = self.store.patients().consents(&patient.id).await?;
        Ok(PatientView {
            contact_points: points
                .into_iter()
                .map(|p| ContactPointView {
                    system: p.system,
                    value: p.value,
                    use_code: p.use_code,
                    rank: p.rank,
                })
                .collect(),
            consents: consents
                .into_iter()
                .map(|c| ConsentView {
                    channel: c.channel,
                    purpose: c.purpose,
                    recipient: c.recipient,
                    status: c.status,
                    source: c.source,
                    recorded_at: rfc3339(c.recorded_at),
                    expires_at: c.expires_at.map(rfc3339),
                })
                .collect(),
            id: patient.id,
            external_id: patient.external_id,
            family_name: patient.family_name,
            given_name: patient.given_name,
            birth_date: patient.birth_date,
            sex: patient.sex,
            language: patient.language,
            time_zone: patient.time_zone,
            created_at: rfc3339(patient.created_at),
            updated_at: rfc3339(patient.updated_at),
        })
    }
}

/// An external id in a path: 1 to [`MAX_EXTERNAL_ID`] characters.
pub fn check_external_id(checks: &mut Checks, name: &str, external_id: &str) {
    if external_id.is_empty() || external_id.len() > MAX_EXTERNAL_ID {
        checks.push(FieldError::parameter(
            name,
            format!("{name} must be 1 to {MAX_EXTERNAL_ID} characters"),
        ));
    }
}

/// Every field at fault, or the store's input.
fn validate(
    external_id: &str,
    body: PatientRequest,
    region: &str,
) -> Result<PatientInput, ServiceError> {
    let mut checks = Checks::new();
    check_external_id(&mut checks, "external_id", external_id);
    if let Some(date) = &body.birth_date {
        checks.check(
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
            "/birth_date",
            "birth_date must be YYYY-MM-DD",
        );
    }
    if let Some(zone) = &body.time_zone {
        checks.check(
            zone.parse::<chrono_tz::Tz>().is_ok(),
            "/time_zone",
            "time_zone must be an IANA zone such as America/Chicago",
        );
    }
    let contact_points = body.contact_points.map(|points| {
        points
            .into_iter()
            .enumerate()
            .map(|(i, point)| {
                checks.check(
                    matches!(
                        point.system.as_str(),
                        "phone" | "sms" | "email" | "fax" | "direct"
                    ),
                    format!("/contact_points/{i}/system"),
                    format!("contact_points[{i}].system must be phone, sms, email, fax or direct"),
                );
                checks.check(
                    !point.value.trim().is_empty(),
                    format!("/contact_points/{i}/value"),
                    format!("contact_points[{i}].value is empty"),
                );
                ContactPointInput::new(
                    &point.system,
                    point.value.trim(),
                    point.use_code,
                    point.rank.unwrap_or(i as i64 + 1),
                    region,
                )
            })
            .collect::<Vec<_>>()
    });
    let mut consents = Vec::with_capacity(body.consents.len());
    for (i, consent) in body.consents.into_iter().enumerate() {
        checks.check(
            matches!(consent.status.as_str(), "granted" | "revoked"),
            format!("/consents/{i}/status"),
            format!("consents[{i}].status must be granted or revoked"),
        );
        let expires_at = match consent.expires_at {
            None => None,
            Some(text) => match chrono::DateTime::parse_from_rfc3339(&text) {
                Ok(at) => Some(at.timestamp_millis()),
                Err(_) => {
                    checks.invalid(
                        format!("/consents/{i}/expires_at"),
                        format!("consents[{i}].expires_at must be RFC 3339"),
                    );
                    None
                }
            },
        };
        consents.push(ConsentInput {
            // As every path records it, so the ledger compares addresses as text.
            recipient: crate::domain::consent::canonical_recipient(
                &consent.channel,
                &consent.recipient,
                region,
            ),
            channel: consent.channel,
            purpose: consent.purpose,
            status: consent.status,
            source: "api".into(),
            expires_at,
        });
    }
    checks.finish()?;
    Ok(PatientInput {
        external_id: external_id.to_string(),
        family_name: body.family_name,
        given_name: body.given_name,
        birth_date: body.birth_date,
        sex: body.sex,
        language: body.language,
        time_zone: body.time_zone,
        address: None,
        identifiers: Vec::new(),
        contact_points,
        consents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> PatientRequest {
        serde_json::from_value(json).expect("request")
    }

    #[test]
    fn every_invalid_field_is_named_by_its_pointer() {
        let body = request(serde_json::json!({
            "birth_date": "29/02/1980",
            "time_zone": "Mars/Olympus",
            "contact_points": [
                {"system": "email", "value": "a@example.org"},
                {"system": "pager", "value": " "},
            ],
            "consents": [{"purpose": "messaging", "status": "maybe", "expires_at": "soon"}],
        }));
        let Err(ServiceError::Invalid(errors)) = validate("MRN-1", body, "US") else {
            panic!("expected field errors");
        };
        let pointers: Vec<&str> = errors.iter().filter_map(|e| e.json_pointer()).collect();
        assert_eq!(
            pointers,
            [
                "/birth_date",
                "/time_zone",
                "/contact_points/1/system",
                "/contact_points/1/value",
                "/consents/0/status",
                "/consents/0/expires_at",
            ]
        );
    }

    #[test]
    fn an_overlong_external_id_is_a_parameter_error() {
        let Err(ServiceError::Invalid(errors)) =
            validate(&"x".repeat(129), request(serde_json::json!({})), "US")
        else {
            panic!("expected field errors");
        };
        assert_eq!(
            errors,
            [FieldError::parameter(
                "external_id",
                "external_id must be 1 to 128 characters"
            )]
        );
    }
}
