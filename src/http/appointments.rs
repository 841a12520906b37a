//! `/v1/appointments/{filler_id}`, `/v1/patients/{external_id}/appointments` and
//! `/v1/recalls/{external_id}`: the records HL7 SIU feeds keep, for systems without an HL7
//! feed. Wire types: `crate::appointments`. The scheduling system's and the organization's
//! ids are not logged; spans record the gateway's ids.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tracing::{Span, field, instrument};

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::patients::upsert_status;
use super::problem::Problem;
use crate::appointments::{
    AppointmentList, AppointmentRequest, AppointmentView, RecallRequest, RecallView,
};

/// `PUT /v1/appointments/{filler_id}`
#[utoipa::path(
    put,
    path = "/v1/appointments/{filler_id}",
    tag = "appointments",
    operation_id = "appointments_upsert",
    summary = "Create or replace an appointment",
    params(
        ("filler_id" = String, Path, description = "The scheduling system's appointment id (SIU filler id).")
    ),
    request_body = AppointmentRequest,
    responses(
        (status = 201, description = "Created", body = AppointmentView),
        (status = 200, description = "Replaced", body = AppointmentView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, appointment_id = field::Empty))]
pub async fn upsert(
    State(state): State<AppState>,
    Org(org): Org,
    Path(filler_id): Path<String>,
    ApiJson(request): ApiJson<AppointmentRequest>,
) -> Result<(StatusCode, Json<AppointmentView>), Problem> {
    let upserted = state
        .app
        .appointments
        .upsert(&org, &filler_id, request)
        .await?;
    Span::current().record("appointment_id", field::display(&upserted.view.id));
    Ok((upsert_status(upserted.created), Json(upserted.view)))
}

/// `GET /v1/appointments/{filler_id}`
#[utoipa::path(
    get,
    path = "/v1/appointments/{filler_id}",
    tag = "appointments",
    operation_id = "appointments_show",
    summary = "An appointment",
    params(
        ("filler_id" = String, Path, description = "The scheduling system's appointment id (SIU filler id).")
    ),
    responses(
        (status = 200, description = "The appointment", body = AppointmentView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, appointment_id = field::Empty))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(filler_id): Path<String>,
) -> Result<Json<AppointmentView>, Problem> {
    let view = state.app.appointments.get(&org, &filler_id).await?;
    Span::current().record("appointment_id", field::display(&view.id));
    Ok(Json(view))
}

/// `GET /v1/patients/{external_id}/appointments`
#[utoipa::path(
    get,
    path = "/v1/patients/{external_id}/appointments",
    tag = "appointments",
    operation_id = "of_patient",
    summary = "A patient's appointments",
    params(
        ("external_id" = String, Path, description = "The organization's own id for the record (for a patient, its MRN).")
    ),
    responses(
        (status = 200, description = "The appointments", body = AppointmentList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn of_patient(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
) -> Result<Json<AppointmentList>, Problem> {
    Ok(Json(
        state
            .app
            .appointments
            .of_patient(&org, &external_id)
            .await?,
    ))
}

/// `PUT /v1/recalls/{external_id}`
#[utoipa::path(
    put,
    path = "/v1/recalls/{external_id}",
    tag = "appointments",
    operation_id = "upsert_recall",
    summary = "Create or replace a recall",
    params(
        ("external_id" = String, Path, description = "The organization's own id for the record (for a patient, its MRN).")
    ),
    request_body = RecallRequest,
    responses(
        (status = 201, description = "Created", body = RecallView),
        (status = 200, description = "Replaced", body = RecallView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, recall_id = field::Empty))]
pub async fn upsert_recall(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
    ApiJson(request): ApiJson<RecallRequest>,
) -> Result<(StatusCode, Json<RecallView>), Problem> {
    let upserted = state
        .app
        .appointments
        .upsert_recall(&org, &external_id, request)
        .await?;
    Span::current().record("recall_id", field::display(&upserted.view.id));
    Ok((upsert_status(upserted.created), Json(upserted.view)))
}

/// `GET /v1/recalls/{external_id}`
#[utoipa::path(
    get,
    path = "/v1/recalls/{external_id}",
    tag = "appointments",
    operation_id = "show_recall",
    summary = "A recall",
    params(
        ("external_id" = String, Path, description = "The organization's own id for the record (for a patient, its MRN).")
    ),
    responses(
        (status = 200, description = "The recall", body = RecallView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, recall_id = field::Empty))]
pub async fn show_recall(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
) -> Result<Json<RecallView>, Problem> {
    let view = state.app.appointments.recall(&org, &external_id).await?;
    Span::current().record("recall_id", field::display(&view.id));
    Ok(Json(view))
}
