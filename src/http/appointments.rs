//! `/v1/appointments` and `/v1/recalls`: the same records HL7 SIU feeds keep, for systems
//! without an HL7 feed (API parity).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{FixedOffset, TimeZone};
use serde::Deserialize;

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::domain::AppointmentStatus;
use crate::domain::appointment::UnknownStatus;
use crate::messages::rfc3339;
use crate::store::{AppointmentInput, AppointmentRow, RecallInput, RecallRow, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentBody {
    /// The patient's external id (must exist: `PUT /v1/patients/{id}` first).
    patient: String,
    /// RFC 3339 with offset, e.g. 2026-12-01T09:30:00-06:00.
    start: String,
    #[serde(default)]
    duration_minutes: Option<i64>,
    /// booked | arrived | completed | cancelled | noshow | discontinued (HL7 table 0278 codes
    /// and older spellings are read too: `domain::AppointmentStatus`).
    #[serde(default = "booked")]
    status: String,
    #[serde(default)]
    placer_id: Option<String>,
    #[serde(default)]
    appointment_type: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    location_code: Option<String>,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    provider_name: Option<String>,
}

fn booked() -> String {
    "booked".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallBody {
    patient: String,
    recall_type: String,
    /// YYYY-MM-DD
    due_date: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default = "open")]
    status: String,
}

fn open() -> String {
    "open".into()
}

async fn patient_id(state: &AppState, org: &str, external_id: &str) -> Result<String, Problem> {
    match state.store.patient_by_external_id(org, external_id).await {
        Ok(p) => Ok(p.id),
        Err(StoreError::NotFound) => Err(Problem::unprocessable(format!(
            "patient {external_id:?} does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn upsert(
    State(state): State<AppState>,
    Org(org): Org,
    Path(filler_id): Path<String>,
    ApiJson(body): ApiJson<AppointmentBody>,
) -> Result<impl IntoResponse, Problem> {
    let start = chrono::DateTime::parse_from_rfc3339(&body.start)
        .map_err(|_| Problem::unprocessable("start must be RFC 3339 with an offset"))?;
    if body.duration_minutes.is_some_and(|d| d <= 0) {
        return Err(Problem::unprocessable("duration_minutes must be positive"));
    }
    let status: AppointmentStatus = body
        .status
        .parse()
        .map_err(|e: UnknownStatus| Problem::invalid_field("/status", format!("status: {e}")))?;
    let patient = patient_id(&state, &org, &body.patient).await?;
    let input = AppointmentInput {
        filler_id,
        placer_id: body.placer_id,
        start_at: start.timestamp_millis(),
        start_offset_minutes: i64::from(start.offset().local_minus_utc() / 60),
        duration_minutes: body.duration_minutes,
        status,
        appointment_type: body.appointment_type,
        reason: body.reason,
        location: body.location,
        location_code: body.location_code,
        provider_id: body.provider_id,
        provider_name: body.provider_name,
        source: "api".into(),
    };
    let (row, created) = state
        .store
        .upsert_appointment(&org, &patient, &input, "api")
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(appointment_view(&row)),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(filler_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    match state.store.appointment_by_filler(&org, &filler_id).await {
        Ok(row) => Ok(Json(appointment_view(&row))),
        Err(StoreError::NotFound) => Err(Problem::not_found("appointment not found")),
        Err(e) => Err(e.into()),
    }
}

pub async fn of_patient(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let patient = match state.store.patient_by_external_id(&org, &external_id).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => return Err(Problem::not_found("patient not found")),
        Err(e) => return Err(e.into()),
    };
    let rows = state.store.appointments_of(&patient.id).await?;
    Ok(Json(
        serde_json::json!({ "appointments": rows.iter().map(appointment_view).collect::<Vec<_>>() }),
    ))
}

pub async fn upsert_recall(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
    ApiJson(body): ApiJson<RecallBody>,
) -> Result<impl IntoResponse, Problem> {
    chrono::NaiveDate::parse_from_str(&body.due_date, "%Y-%m-%d")
        .map_err(|_| Problem::unprocessable("due_date must be YYYY-MM-DD"))?;
    if !matches!(body.status.as_str(), "open" | "booked" | "closed") {
        return Err(Problem::unprocessable(
            "status must be open, booked or closed",
        ));
    }
    let patient = patient_id(&state, &org, &body.patient).await?;
    let input = RecallInput {
        external_id,
        recall_type: body.recall_type,
        due_date: body.due_date,
        provider: body.provider,
        location: body.location,
        status: body.status,
    };
    let (row, created) = state.store.upsert_recall(&org, &patient, &input).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(recall_view(&row)),
    ))
}

pub async fn show_recall(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    match state.store.recall(&org, &external_id).await {
        Ok(row) => Ok(Json(recall_view(&row))),
        Err(StoreError::NotFound) => Err(Problem::not_found("recall not found")),
        Err(e) => Err(e.into()),
    }
}

/// Start shown in the offset the source gave.
pub fn appointment_view(row: &AppointmentRow) -> serde_json::Value {
    let offset = FixedOffset::east_opt(i32::try_from(row.start_offset_minutes * 60).unwrap_or(0))
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    let start = offset
        .timestamp_millis_opt(row.start_at)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    serde_json::json!({
        "id": row.id, "filler_id": row.filler_id, "placer_id": row.placer_id, "patient_id": row.patient_id,
        "start": start, "duration_minutes": row.duration_minutes, "status": row.status,
        "appointment_type": row.appointment_type, "reason": row.reason, "location": row.location,
        "location_code": row.location_code, "provider_id": row.provider_id, "provider_name": row.provider_name,
        "source": row.source, "updated_at": rfc3339(row.updated_at), "confirmation": row.confirmation,
    })
}

fn recall_view(row: &RecallRow) -> serde_json::Value {
    serde_json::json!({
        "id": row.id, "external_id": row.external_id, "patient_id": row.patient_id, "recall_type": row.recall_type,
        "due_date": row.due_date, "provider": row.provider, "location": row.location, "status": row.status,
        "updated_at": rfc3339(row.updated_at),
    })
}
