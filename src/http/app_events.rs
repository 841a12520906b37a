//! `POST /v1/app-events`: the messaging app's events (`pm_message_sent`,
//! `pm_urgent_message_sent`). Authenticated by an API key with the `send` scope, or — without
//! an `Authorization` header — by a Standard Webhooks signature with one of the
//! `[webhooks] app_secrets`, which also names the organization. Wire types and logic:
//! `crate::app_events`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tracing::{Span, field, instrument};

use super::AppState;
use super::auth::Org;
use super::problem::{Problem, ProblemType};
use crate::app_events::{AppEvent, AppEventOutcome};

/// `POST /v1/app-events`: 202 with the gateway's message id.
#[utoipa::path(
    post,
    path = "/v1/app-events",
    tag = "events",
    operation_id = "receive",
    summary = "An event from the messaging app (API key with `send`, or a Standard Webhooks signature)",
    request_body = AppEvent,
    responses(
        (status = 202, description = "Accepted", body = AppEventOutcome)
    )
)]
#[instrument(skip_all, fields(organization_id = field::Empty, message_id = field::Empty))]
pub async fn receive(
    State(state): State<AppState>,
    mut parts: Parts,
    body: Bytes,
) -> Result<(StatusCode, Json<AppEventOutcome>), Problem> {
    let organization_id = if parts.headers.contains_key(AUTHORIZATION) {
        Org::from_request_parts(&mut parts, &state).await?.0
    } else {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let (id, timestamp, signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        if id.is_empty() || signature.is_empty() {
            return Err(Problem::unauthorized());
        }
        state
            .app
            .app_events
            .signed_by(id, timestamp, signature, &body)
            .await?
            .ok_or_else(|| {
                Problem::new(
                    ProblemType::WebhookSignatureInvalid,
                    "the signature matches no app secret, or the timestamp is not within five minutes",
                )
            })?
    };
    Span::current().record("organization_id", field::display(&organization_id));
    let event: AppEvent = serde_json::from_slice(&body).map_err(|_| {
        Problem::new(
            ProblemType::InvalidBody,
            "the body is {\"type\": …, \"event_version\": 1, \"data\": {…}}",
        )
    })?;
    let outcome = state
        .app
        .app_events
        .receive(&organization_id, event)
        .await?;
    Span::current().record("message_id", field::display(&outcome.message_id));
    Ok((StatusCode::ACCEPTED, Json(outcome)))
}
