//! The HL7 archive (`admin` scope): `GET /v1/hl7/messages?status=&type=&control_id=&since=
//! &until=&cursor=&limit=` and `GET /v1/hl7/messages/{id}[?reveal=true]` (fields outside MSH
//! masked; revealing them is audited under the caller's key). Wire types: `crate::ops`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use tracing::instrument;

use super::auth::{Caller, Org};
use super::json::ApiQuery;
use super::{AppState, Problem};
use crate::ops::{Hl7List, Hl7MessageView, Hl7Query};

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
