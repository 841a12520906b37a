//! Appointments and recalls through the API: the same records HL7 SIU feeds keep, for systems
//! without an HL7 feed (API parity). The request and response types are the wire shapes of
//! `/v1/appointments/{filler_id}`, `/v1/patients/{external_id}/appointments` and
//! `/v1/recalls/{external_id}`.

use chrono::{FixedOffset, TimeZone};
use serde::{Deserialize, Serialize};

use crate::domain::AppointmentStatus;
use crate::messages::rfc3339;
use crate::patients::{PatientService, Upserted, check_external_id};
use crate::service::{Checks, FieldError, ServiceError};
use crate::store::{AppointmentInput, AppointmentRow, RecallInput, RecallRow, Store, StoreError};

/// `PUT /v1/appointments/{filler_id}`: an appointment, keyed by the scheduling system's id.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentRequest {
    /// The patient's external id (must exist: `PUT /v1/patients/{id}` first).
    pub patient: String,
    /// RFC 3339 with offset, e.g. 2026-12-01T09:30:00-06:00 (shown back in that offset).
    #[schema(format = DateTime)]
    pub start: String,
    /// Positive.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub duration_minutes: Option<i64>,
    /// booked (the default) | arrived | completed | cancelled | noshow | discontinued; HL7
    /// table 0278 codes and older spellings (`canceled`, `no-show`, `confirmed`, …) are read
    /// too (`domain::AppointmentStatus`), anything else is refused.
    #[serde(default = "booked")]
    pub status: String,
    #[serde(default)]
    pub placer_id: Option<String>,
    #[serde(default)]
    pub appointment_type: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub location_code: Option<String>,
    #[serde(default)]
    pub provider_id: Option<String>,
    #[serde(default)]
    pub provider_name: Option<String>,
}

fn booked() -> String {
    "booked".into()
}

/// `PUT /v1/recalls/{external_id}`: a recall (a patient due back for a type of visit).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// The patient's external id (must exist).
    pub patient: String,
    pub recall_type: String,
    /// YYYY-MM-DD.
    pub due_date: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    /// open (the default) | booked | closed
    #[serde(default = "open")]
    pub status: String,
}

fn open() -> String {
    "open".into()
}

/// An appointment as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppointmentView {
    /// The gateway's id (`apt_…`).
    pub id: String,
    pub filler_id: String,
    pub placer_id: Option<String>,
    /// The patient's gateway id.
    pub patient_id: String,
    /// RFC 3339 in the offset the source gave.
    pub start: String,
    pub duration_minutes: Option<i64>,
    pub status: String,
    pub appointment_type: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub location_code: Option<String>,
    pub provider_id: Option<String>,
    pub provider_name: Option<String>,
    /// api or hl7.
    pub source: String,
    /// RFC 3339 (UTC).
    pub updated_at: String,
    /// What the patient answered to a reminder (`confirmed`, `cancel_requested`, …).
    pub confirmation: Option<String>,
}

impl From<&AppointmentRow> for AppointmentView {
    fn from(row: &AppointmentRow) -> Self {
        Self {
            id: row.id.clone(),
            filler_id: row.filler_id.clone(),
            placer_id: row.placer_id.clone(),
            patient_id: row.patient_id.clone(),
            start: start_in_offset(row.start_at, row.start_offset_minutes),
            duration_minutes: row.duration_minutes,
            status: row.status.clone(),
            appointment_type: row.appointment_type.clone(),
            reason: row.reason.clone(),
            location: row.location.clone(),
            location_code: row.location_code.clone(),
            provider_id: row.provider_id.clone(),
            provider_name: row.provider_name.clone(),
            source: row.source.clone(),
            updated_at: rfc3339(row.updated_at),
            confirmation: row.confirmation.clone(),
        }
    }
}

/// `GET /v1/patients/{external_id}/appointments`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppointmentList {
    pub appointments: Vec<AppointmentView>,
}

/// A recall as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecallView {
    /// The gateway's id.
    pub id: String,
    pub external_id: String,
    /// The patient's gateway id.
    pub patient_id: String,
    pub recall_type: String,
    /// YYYY-MM-DD.
    pub due_date: String,
    pub provider: Option<String>,
    pub location: Option<String>,
    pub status: String,
    /// RFC 3339 (UTC).
    pub updated_at: String,
}

impl From<&RecallRow> for RecallView {
    fn from(row: &RecallRow) -> Self {
        Self {
            id: row.id.clone(),
            external_id: row.external_id.clone(),
            patient_id: row.patient_id.clone(),
            recall_type: row.recall_type.clone(),
            due_date: row.due_date.clone(),
            provider: row.provider.clone(),
            location: row.location.clone(),
            status: row.status.clone(),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// A start instant shown in the offset the source gave.
pub fn start_in_offset(start_at: i64, offset_minutes: i64) -> String {
    let offset = i32::try_from(offset_minutes * 60)
        .ok()
        .and_then(FixedOffset::east_opt)
        .or_else(|| FixedOffset::east_opt(0));
    offset
        .and_then(|o| o.timestamp_millis_opt(start_at).single())
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// Appointments and recalls of an organization.
#[derive(Clone)]
pub struct AppointmentService {
    pub store: Store,
    pub patients: PatientService,
}

impl AppointmentService {
    /// Creates or replaces the appointment `filler_id`.
    pub async fn upsert(
        &self,
        organization_id: &str,
        filler_id: &str,
        request: AppointmentRequest,
    ) -> Result<Upserted<AppointmentView>, ServiceError> {
        let mut checks = Checks::new();
        if filler_id.is_empty() {
            checks.push(FieldError::parameter("filler_id", "filler_id is empty"));
        }
        let start = chrono::DateTime::parse_from_rfc3339(&request.start);
        checks.check(
            start.is_ok(),
            "/start",
            "start must be RFC 3339 with an offset",
        );
        checks.check(
            request.duration_minutes.is_none_or(|d| d > 0),
            "/duration_minutes",
            "duration_minutes must be positive",
        );
        let status = request.status.parse::<AppointmentStatus>();
        if let Err(e) = &status {
            checks.invalid("/status", format!("status: {e}"));
        }
        let patient = self
            .referenced_patient(organization_id, &request.patient, &mut checks)
            .await?;
        checks.finish()?;
        let (Ok(start), Ok(status), Some(patient)) = (start, status, patient) else {
            return Err(ServiceError::Internal(
                "checked appointment lost its start, status or patient".into(),
            ));
        };
        let input = AppointmentInput {
            filler_id: filler_id.to_string(),
            placer_id: request.placer_id,
            start_at: start.timestamp_millis(),
            start_offset_minutes: i64::from(start.offset().local_minus_utc() / 60),
            duration_minutes: request.duration_minutes,
            status,
            appointment_type: request.appointment_type,
            reason: request.reason,
            location: request.location,
            location_code: request.location_code,
            provider_id: request.provider_id,
            provider_name: request.provider_name,
            source: "api".into(),
        };
        let (row, created) = self
            .store
            .appointments()
            .upsert(organization_id, &patient, &input, "api")
            .await?;
        Ok(Upserted {
            view: AppointmentView::from(&row),
            created,
        })
    }

    /// The appointment by the scheduling system's id.
    pub async fn get(
        &self,
        organization_id: &str,
        filler_id: &str,
    ) -> Result<AppointmentView, ServiceError> {
        Ok(AppointmentView::from(
            &self.find(organization_id, filler_id).await?,
        ))
    }

    /// The appointment row (404 when absent).
    pub async fn find(
        &self,
        organization_id: &str,
        filler_id: &str,
    ) -> Result<AppointmentRow, ServiceError> {
        match self
            .store
            .appointments()
            .by_filler(organization_id, filler_id)
            .await
        {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("appointment")),
            other => Ok(other?),
        }
    }

    /// The patient's appointments.
    pub async fn of_patient(
        &self,
        organization_id: &str,
        external_id: &str,
    ) -> Result<AppointmentList, ServiceError> {
        let patient = self.patients.find(organization_id, external_id).await?;
        let rows = self.store.appointments().of_patient(&patient.id).await?;
        Ok(AppointmentList {
            appointments: rows.iter().map(AppointmentView::from).collect(),
        })
    }

    /// Creates or replaces the recall `external_id`.
    pub async fn upsert_recall(
        &self,
        organization_id: &str,
        external_id: &str,
        request: RecallRequest,
    ) -> Result<Upserted<RecallView>, ServiceError> {
        let mut checks = Checks::new();
        check_external_id(&mut checks, "external_id", external_id);
        checks.check(
            chrono::NaiveDate::parse_from_str(&request.due_date, "%Y-%m-%d").is_ok(),
            "/due_date",
            "due_date must be YYYY-MM-DD",
        );
        checks.check(
            matches!(request.status.as_str(), "open" | "booked" | "closed"),
            "/status",
            "status must be open, booked or closed",
        );
        let patient = self
            .referenced_patient(organization_id, &request.patient, &mut checks)
            .await?;
        checks.finish()?;
        let Some(patient) = patient else {
            return Err(ServiceError::Internal(
                "checked recall lost its patient".into(),
            ));
        };
        let input = RecallInput {
            external_id: external_id.to_string(),
            recall_type: request.recall_type,
            due_date: request.due_date,
            provider: request.provider,
            location: request.location,
            status: request.status,
        };
        let (row, created) = self
            .store
            .appointments()
            .upsert_recall(organization_id, &patient, &input)
            .await?;
        Ok(Upserted {
            view: RecallView::from(&row),
            created,
        })
    }

    /// The recall by the organization's id.
    pub async fn recall(
        &self,
        organization_id: &str,
        external_id: &str,
    ) -> Result<RecallView, ServiceError> {
        match self
            .store
            .appointments()
            .recall(organization_id, external_id)
            .await
        {
            Err(StoreError::NotFound) => Err(ServiceError::NotFound("recall")),
            other => Ok(RecallView::from(&other?)),
        }
    }

    /// The id of the patient a body names at `/patient`, or a field error added to `checks`.
    async fn referenced_patient(
        &self,
        organization_id: &str,
        external_id: &str,
        checks: &mut Checks,
    ) -> Result<Option<String>, ServiceError> {
        match self
            .patients
            .referenced(organization_id, external_id, "/patient")
            .await
        {
            Ok(id) => Ok(Some(id)),
            Err(ServiceError::Invalid(errors)) => {
                for error in errors {
                    checks.push(error);
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
