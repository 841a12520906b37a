//! `PUT /v1/patients/{external_id}` (201 created, 200 replaced) and `GET`. Wire types:
//! `crate::patients`. External ids are the organization's (an MRN): they are never logged; the
//! span records the gateway's patient id instead.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tracing::{Span, field, instrument};

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::patients::{PatientRequest, PatientView};

/// 201 when the upsert created the record, else 200.
pub fn upsert_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// `PUT /v1/patients/{external_id}`
#[utoipa::path(
    put,
    path = "/v1/patients/{external_id}",
    tag = "patients",
    operation_id = "patients_upsert",
    summary = "Create or replace a patient",
    params(
        ("external_id" = String, Path, description = "The organization's own id for the record (for a patient, its MRN).")
    ),
    request_body = PatientRequest,
    responses(
        (status = 201, description = "Created", body = PatientView),
        (status = 200, description = "Replaced", body = PatientView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, patient_id = field::Empty))]
pub async fn upsert(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
    ApiJson(request): ApiJson<PatientRequest>,
) -> Result<(StatusCode, Json<PatientView>), Problem> {
    let upserted = state
        .app
        .patients
        .upsert(&org, &external_id, request)
        .await?;
    Span::current().record("patient_id", field::display(&upserted.view.id));
    Ok((upsert_status(upserted.created), Json(upserted.view)))
}

/// `GET /v1/patients/{external_id}`
#[utoipa::path(
    get,
    path = "/v1/patients/{external_id}",
    tag = "patients",
    operation_id = "patients_show",
    summary = "A patient",
    params(
        ("external_id" = String, Path, description = "The organization's own id for the record (for a patient, its MRN).")
    ),
    responses(
        (status = 200, description = "The patient", body = PatientView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, patient_id = field::Empty))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
) -> Result<Json<PatientView>, Problem> {
    let view = state.app.patients.get(&org, &external_id).await?;
    Span::current().record("patient_id", field::display(&view.id));
    Ok(Json(view))
}
