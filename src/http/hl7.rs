//! The HL7 archive (`admin` scope): `GET /v1/hl7/messages?status=&type=&control_id=&since=
//! &until=&cursor=&limit=` and `GET /v1/hl7/messages/{id}[?reveal=true]` (fields outside MSH
//! masked; revealing them is audited under the caller's key);
//! `POST /v1/hl7/messages/{id}/reprocess` and `POST /v1/hl7/messages/reprocess` (a body
//! `{"status": "error", "since": …, "until": …}`): archived messages run through the
//! listener's intake again, audited. Wire types: `crate::ops`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use tracing::instrument;

use super::auth::{Caller, Org};
use super::json::{ApiJson, ApiQuery};
use super::{AppState, Problem};
use crate::ops::{Hl7List, Hl7MessageView, Hl7Query, Hl7ReprocessFilter, Hl7Reprocessed};

/// `GET /v1/hl7/messages`
#[utoipa::path(
    get,
    path = "/v1/hl7/messages",
    tag = "hl7",
    operation_id = "hl7_list",
    summary = "The HL7 archive",
    params(
        Hl7Query
    ),
    responses(
        (status = 200, description = "A page of archived messages", body = Hl7List)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<Hl7Query>,
) -> Result<Json<Hl7List>, Problem> {
    Ok(Json(state.app.ops.hl7_messages(&org, &query).await?))
}

/// `?reveal=` of `GET /v1/hl7/messages/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    #[serde(default)]
    reveal: bool,
}

/// `GET /v1/hl7/messages/{id}`
#[utoipa::path(
    get,
    path = "/v1/hl7/messages/{id}",
    tag = "hl7",
    operation_id = "hl7_show",
    summary = "An archived HL7 message (fields outside MSH masked unless revealed, audited)",
    params(
        ("id" = String, Path, description = "The record's id (a ULID)."),
        ShowQuery
    ),
    responses(
        (status = 200, description = "The message", body = Hl7MessageView)
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id, hl7_message_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ShowQuery>,
) -> Result<Json<Hl7MessageView>, Problem> {
    Ok(Json(
        state
            .app
            .ops
            .hl7_message(&caller.organization_id, &id, query.reveal, &caller.actor())
            .await?,
    ))
}

/// `POST /v1/hl7/messages/{id}/reprocess`
#[utoipa::path(
    post,
    path = "/v1/hl7/messages/{id}/reprocess",
    tag = "hl7",
    operation_id = "reprocess",
    summary = "Run an archived message through intake again",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The outcome", body = Hl7Reprocessed),
        (status = 409, description = "No HL7 listener runs on this daemon", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id, hl7_message_id = %id))]
pub async fn reprocess(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Hl7Reprocessed>, Problem> {
    Ok(Json(
        state
            .app
            .ops
            .hl7_reprocess(&caller.organization_id, &id, &caller.actor())
            .await?,
    ))
}

/// `POST /v1/hl7/messages/reprocess`
#[utoipa::path(
    post,
    path = "/v1/hl7/messages/reprocess",
    tag = "hl7",
    operation_id = "reprocess_all",
    summary = "Run matching archived messages through intake again",
    request_body = Hl7ReprocessFilter,
    responses(
        (status = 200, description = "The outcome", body = Hl7Reprocessed),
        (status = 409, description = "No HL7 listener runs on this daemon", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id))]
pub async fn reprocess_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(filter): ApiJson<Hl7ReprocessFilter>,
) -> Result<Json<Hl7Reprocessed>, Problem> {
    Ok(Json(
        state
            .app
            .ops
            .hl7_reprocess_all(&caller.organization_id, &filter, &caller.actor())
            .await?,
    ))
}
