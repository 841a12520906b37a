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
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<Hl7Query>,
) -> Result<Json<Hl7List>, Problem> {
    Ok(Json(state.app.ops.hl7_messages(&org, &query).await?))
}

/// `?reveal=` of `GET /v1/hl7/messages/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    #[serde(default)]
    reveal: bool,
}

/// `GET /v1/hl7/messages/{id}`
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
