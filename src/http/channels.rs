//! Channels and connectors (`admin` scope): `GET /v1/channels`,
//! `POST /v1/channels/{channel}/pause|resume`, `POST /v1/connectors/{name}/pause|resume`
//! (an optional body `{"reason": "…"}` on pause). Wire types: `crate::ops::channels`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use tracing::instrument;

use super::auth::{Caller, Org};
use super::{AppState, Problem};
use crate::ops::{ChannelsView, PauseBody, PauseView};
use crate::service::ServiceError;

/// `GET /v1/channels`
#[utoipa::path(
    get,
    path = "/v1/channels",
    tag = "operations",
    operation_id = "channels_list",
    summary = "Channels and connectors, with their pauses",
    responses(
        (status = 200, description = "The channels and connectors", body = ChannelsView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
) -> Result<Json<ChannelsView>, Problem> {
    Ok(Json(state.app.ops.channels(&org).await?))
}

fn reason(body: &Bytes) -> Result<Option<String>, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // `null` is no body, as the OpenAPI document says (an optional, nullable body).
    serde_json::from_slice::<Option<PauseBody>>(body)
        .map(|b| b.and_then(|b| b.reason))
        .map_err(|e| ServiceError::invalid("", format!("not a pause body: {e}")))
}

async fn set(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    name: &str,
    pause: bool,
    body: &Bytes,
) -> Result<Json<PauseView>, Problem> {
    let reason = if pause { reason(body)? } else { None };
    Ok(Json(
        state
            .app
            .ops
            .set_paused(
                &caller.organization_id,
                &caller.actor(),
                kind,
                name,
                pause,
                reason.as_deref(),
            )
            .await?,
    ))
}

/// `POST /v1/channels/{channel}/pause`
#[utoipa::path(
    post,
    path = "/v1/channels/{channel}/pause",
    tag = "operations",
    operation_id = "pause_channel",
    summary = "Pause a channel",
    params(
        ("channel" = String, Path, description = "sms, email, fax or direct.")
    ),
    request_body(content = Option<PauseBody>, description = "Optional (empty or `null`): why", content_type = "application/json"),
    responses(
        (status = 200, description = "Paused", body = PauseView)
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, channel = %channel))]
pub async fn pause_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    body: Bytes,
) -> Result<Json<PauseView>, Problem> {
    set(&state, &caller, "channel", &channel, true, &body).await
}

/// `POST /v1/channels/{channel}/resume`
#[utoipa::path(
    post,
    path = "/v1/channels/{channel}/resume",
    tag = "operations",
    operation_id = "resume_channel",
    summary = "Resume a channel",
    params(
        ("channel" = String, Path, description = "sms, email, fax or direct.")
    ),
    responses(
        (status = 200, description = "Resumed", body = PauseView)
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, channel = %channel))]
pub async fn resume_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<Json<PauseView>, Problem> {
    set(&state, &caller, "channel", &channel, false, &Bytes::new()).await
}

/// `POST /v1/connectors/{name}/pause`
#[utoipa::path(
    post,
    path = "/v1/connectors/{name}/pause",
    tag = "operations",
    operation_id = "pause_connector",
    summary = "Pause a connector",
    params(
        ("name" = String, Path, description = "A connector's name, as configured.")
    ),
    request_body(content = Option<PauseBody>, description = "Optional (empty or `null`): why", content_type = "application/json"),
    responses(
        (status = 200, description = "Paused", body = PauseView)
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, connector = %name))]
pub async fn pause_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<PauseView>, Problem> {
    set(&state, &caller, "connector", &name, true, &body).await
}

/// `POST /v1/connectors/{name}/resume`
#[utoipa::path(
    post,
    path = "/v1/connectors/{name}/resume",
    tag = "operations",
    operation_id = "resume_connector",
    summary = "Resume a connector",
    params(
        ("name" = String, Path, description = "A connector's name, as configured.")
    ),
    responses(
        (status = 200, description = "Resumed", body = PauseView)
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, connector = %name))]
pub async fn resume_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PauseView>, Problem> {
    set(&state, &caller, "connector", &name, false, &Bytes::new()).await
}
