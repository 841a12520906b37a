//! The admin lists (`admin` scope): `GET /v1/messages?status=&channel=&patient=&since=&until=
//! &cursor=&limit=`, `GET /v1/deliveries?status=&channel=&connector=&since=
//! &until=&cursor=&limit=` and `GET /v1/dead-letters?channel=&since=&until=&include_retried=`,
//! newest first with keyset cursors; `POST /v1/dead-letters/{delivery_id}/retry` and
//! `POST /v1/dead-letters/retry` (a body of the same filters: every matching dead letter not
//! yet retried). Wire types: `crate::ops`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tracing::instrument;

use super::auth::Org;
use super::json::{ApiJson, ApiQuery};
use super::{AppState, Problem};
use crate::ops::{DeadLetterList, DeliveryList, ListQuery, MessageList, MessageQuery, Retried};

/// `GET /v1/messages`
#[utoipa::path(
    get,
    path = "/v1/messages",
    tag = "operations",
    operation_id = "messages",
    summary = "List messages (newest first)",
    params(
        MessageQuery
    ),
    responses(
        (status = 200, description = "A page of messages", body = MessageList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn messages(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<MessageQuery>,
) -> Result<Json<MessageList>, Problem> {
    Ok(Json(state.app.ops.messages(&org, &query).await?))
}

/// `GET /v1/deliveries`
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "operations",
    operation_id = "operations_list",
    summary = "List deliveries (newest first)",
    params(
        ListQuery
    ),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeliveryList>, Problem> {
    Ok(Json(state.app.ops.deliveries(&org, &query).await?))
}

/// `GET /v1/dead-letters`
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "operations",
    operation_id = "dead_letters",
    summary = "List dead letters",
    params(
        ListQuery
    ),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterList>, Problem> {
    Ok(Json(state.app.ops.dead_letters(&org, &query).await?))
}

/// `POST /v1/dead-letters/{delivery_id}/retry`
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{delivery_id}/retry",
    tag = "operations",
    operation_id = "operations_retry",
    summary = "Retry a dead letter",
    params(
        ("delivery_id" = String, Path, description = "The delivery's id.")
    ),
    responses(
        (status = 202, description = "Queued again", body = Retried),
        (status = 409, description = "Already retried", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, delivery_id = %delivery_id))]
pub async fn retry(
    State(state): State<AppState>,
    Org(org): Org,
    Path(delivery_id): Path<String>,
) -> Result<(StatusCode, Json<Retried>), Problem> {
    let retried = state.app.ops.retry_dead_letter(&org, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(retried)))
}

/// `POST /v1/dead-letters/retry`
#[utoipa::path(
    post,
    path = "/v1/dead-letters/retry",
    tag = "operations",
    operation_id = "retry_all",
    summary = "Retry every matching dead letter",
    request_body = ListQuery,
    responses(
        (status = 202, description = "Queued again", body = Retried)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn retry_all(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(filter): ApiJson<ListQuery>,
) -> Result<(StatusCode, Json<Retried>), Problem> {
    let retried = state.app.ops.retry_dead_letters(&org, &filter).await?;
    Ok((StatusCode::ACCEPTED, Json(retried)))
}
