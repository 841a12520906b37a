//! `/v1/webhook-endpoints/{id}` (admin scope): webhook endpoints, secret rotation, and their
//! deliveries (dead letters listed and retried). Wire types: `crate::webhooks`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::instrument;

use super::AppState;
use super::auth::Org;
use super::json::{ApiJson, ApiQuery};
use super::problem::{Problem, ProblemType};
use crate::webhooks::{DeliveriesPage, DeliveryView, EndpointView, PutEndpoint, RotateRequest};

/// `PUT /v1/webhook-endpoints/{id}`: 201 with the secret when created, 200 when updated.
#[utoipa::path(
    put,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    operation_id = "webhooks_put",
    summary = "Create or replace a webhook endpoint",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    request_body = PutEndpoint,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = EndpointView),
        (status = 200, description = "Updated", body = EndpointView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id))]
pub async fn put(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PutEndpoint>,
) -> Result<Response, Problem> {
    let (view, created) = state.app.webhooks.put(&org, &id, &request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// `GET /v1/webhook-endpoints/{id}`
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    operation_id = "webhooks_show",
    summary = "A webhook endpoint",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, Problem> {
    Ok(Json(state.app.webhooks.show(&org, &id).await?))
}

/// `DELETE /v1/webhook-endpoints/{id}`: 204; its pending deliveries are dropped.
#[utoipa::path(
    delete,
    path = "/v1/webhook-endpoints/{id}",
    tag = "webhooks",
    operation_id = "webhooks_delete",
    summary = "Delete a webhook endpoint",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 204, description = "Deleted; its pending deliveries are dropped")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id))]
pub async fn delete(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.app.webhooks.delete(&org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/webhook-endpoints/{id}/rotate` (body optional: `{"overlap_secs": n}`): the new
/// secret, once.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/rotate",
    tag = "webhooks",
    operation_id = "rotate",
    summary = "Rotate an endpoint's secret",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    request_body(content = Option<RotateRequest>, description = "Optional (empty or `null`): how long the old secret stays valid", content_type = "application/json"),
    responses(
        (status = 200, description = "The endpoint with its new secret, shown this once", body = EndpointView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id))]
pub async fn rotate(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EndpointView>, Problem> {
    let request: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        // `null` is no body, as the OpenAPI document says (an optional, nullable body).
        serde_json::from_slice::<Option<RotateRequest>>(&body)
            .map(Option::unwrap_or_default)
            .map_err(|_| {
                Problem::new(
                    ProblemType::InvalidBody,
                    "the body is {\"overlap_secs\": <seconds>} or empty",
                )
            })?
    };
    Ok(Json(state.app.webhooks.rotate(&org, &id, &request).await?))
}

/// `?status=&limit=` of the deliveries list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `dead`; absent: all.
    status: Option<String>,
    /// 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// `GET /v1/webhook-endpoints/{id}/deliveries?status=dead`
#[utoipa::path(
    get,
    path = "/v1/webhook-endpoints/{id}/deliveries",
    tag = "webhooks",
    operation_id = "deliveries",
    summary = "An endpoint's deliveries",
    params(
        ("id" = String, Path, description = "The record's id (a ULID)."),
        DeliveriesQuery
    ),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveriesPage)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id))]
pub async fn deliveries(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveriesPage>, Problem> {
    Ok(Json(
        state
            .app
            .webhooks
            .deliveries(&org, &id, query.status.as_deref(), query.limit)
            .await?,
    ))
}

/// `POST /v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry`: 202 with the delivery.
#[utoipa::path(
    post,
    path = "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
    tag = "webhooks",
    operation_id = "webhooks_retry",
    summary = "Retry a webhook delivery",
    params(
        ("id" = String, Path, description = "The record's id (a ULID)."),
        ("delivery_id" = String, Path, description = "The delivery's id.")
    ),
    responses(
        (status = 202, description = "Queued again", body = crate::webhooks::DeliveryView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id, webhook_delivery_id = %delivery_id))]
pub async fn retry(
    State(state): State<AppState>,
    Org(org): Org,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), Problem> {
    let view = state.app.webhooks.retry(&org, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
