//! The staff directory for urgent notifications: `PUT /v1/staff/{external_id}`,
//! `GET /v1/staff`. Wire types: `crate::staff`.

use axum::Json;
use axum::extract::{Path, State};
use tracing::{Span, field, instrument};

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::staff::{StaffList, StaffRequest, StaffView};

/// `PUT /v1/staff/{external_id}`: 200 with the member.
#[utoipa::path(
    put,
    path = "/v1/staff/{external_id}",
    tag = "staff",
    operation_id = "staff_upsert",
    summary = "Create or replace a staff member",
    params(
        ("external_id" = String, Path, description = "The organization's own id for the record (for a patient, its MRN).")
    ),
    request_body = StaffRequest,
    responses(
        (status = 200, description = "The member", body = StaffView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, staff_id = field::Empty))]
pub async fn upsert(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
    ApiJson(request): ApiJson<StaffRequest>,
) -> Result<Json<StaffView>, Problem> {
    let view = state.app.staff.upsert(&org, &external_id, request).await?;
    Span::current().record("staff_id", field::display(&view.id));
    Ok(Json(view))
}

/// `GET /v1/staff`
#[utoipa::path(
    get,
    path = "/v1/staff",
    tag = "staff",
    operation_id = "staff_list",
    summary = "The staff directory",
    responses(
        (status = 200, description = "The directory", body = StaffList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
) -> Result<Json<StaffList>, Problem> {
    Ok(Json(state.app.staff.list(&org).await?))
}
