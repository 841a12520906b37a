//! `/v1/campaigns` (admin scope): recall campaigns and bulk notices — create, list, show with
//! progress, preview (dry run), pause, resume, cancel, report. Wire types and rules:
//! `crate::campaigns::service`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tracing::instrument;

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::campaigns::Campaign;
use crate::campaigns::Preview;
use crate::campaigns::service::{CampaignList, CampaignReport, CampaignView};

/// `POST /v1/campaigns`: 201 with the campaign.
#[utoipa::path(
    post,
    path = "/v1/campaigns",
    tag = "campaigns",
    operation_id = "campaigns_create",
    summary = "Create a campaign",
    request_body = Campaign,
    responses(
        (status = 201, description = "The campaign", body = CampaignView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(campaign): ApiJson<Campaign>,
) -> Result<Response, Problem> {
    let view = state
        .app
        .campaigns
        .api_create(&org, campaign, Utc::now())
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /v1/campaigns`: newest first.
#[utoipa::path(
    get,
    path = "/v1/campaigns",
    tag = "campaigns",
    operation_id = "campaigns_list",
    summary = "List campaigns (newest first)",
    responses(
        (status = 200, description = "The campaigns", body = CampaignList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
) -> Result<Json<CampaignList>, Problem> {
    Ok(Json(state.app.campaigns.api_list(&org).await?))
}

/// `GET /v1/campaigns/{id}`
#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}",
    tag = "campaigns",
    operation_id = "campaigns_show",
    summary = "A campaign with its progress",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The campaign", body = CampaignView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, campaign_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, Problem> {
    Ok(Json(state.app.campaigns.api_show(&org, &id).await?))
}

/// `POST /v1/campaigns/{id}/preview`: what a run now would do; sends and records nothing.
#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/preview",
    tag = "campaigns",
    operation_id = "preview",
    summary = "What a run now would do (sends nothing)",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The preview", body = Preview)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, campaign_id = %id))]
pub async fn preview(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<Preview>, Problem> {
    Ok(Json(
        state
            .app
            .campaigns
            .api_preview(&org, &id, Utc::now())
            .await?,
    ))
}

async fn transition(
    state: AppState,
    org: String,
    id: String,
    action: &str,
) -> Result<Json<CampaignView>, Problem> {
    Ok(Json(
        state
            .app
            .campaigns
            .api_transition(&org, &id, action)
            .await?,
    ))
}

/// `POST /v1/campaigns/{id}/pause`
#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/pause",
    tag = "campaigns",
    operation_id = "pause",
    summary = "Pause a campaign",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 409, description = "Not in a state to pause", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, campaign_id = %id))]
pub async fn pause(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, Problem> {
    transition(state, org, id, "pause").await
}

/// `POST /v1/campaigns/{id}/resume`
#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/resume",
    tag = "campaigns",
    operation_id = "resume",
    summary = "Resume a campaign",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 409, description = "Not in a state to resume", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, campaign_id = %id))]
pub async fn resume(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, Problem> {
    transition(state, org, id, "resume").await
}

/// `POST /v1/campaigns/{id}/cancel`
#[utoipa::path(
    post,
    path = "/v1/campaigns/{id}/cancel",
    tag = "campaigns",
    operation_id = "cancel",
    summary = "Cancel a campaign",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 409, description = "Not in a state to cancel", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, campaign_id = %id))]
pub async fn cancel(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, Problem> {
    transition(state, org, id, "cancel").await
}

/// `GET /v1/campaigns/{id}/report`
#[utoipa::path(
    get,
    path = "/v1/campaigns/{id}/report",
    tag = "campaigns",
    operation_id = "report",
    summary = "A campaign's report",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The report", body = CampaignReport)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, campaign_id = %id))]
pub async fn report(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<CampaignReport>, Problem> {
    Ok(Json(
        state
            .app
            .campaigns
            .api_report(&org, &id, Utc::now())
            .await?,
    ))
}
