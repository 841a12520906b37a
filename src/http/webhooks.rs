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
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, Problem> {
    Ok(Json(state.app.webhooks.show(&org, &id).await?))
}

/// `DELETE /v1/webhook-endpoints/{id}`: 204; its pending deliveries are dropped.
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
        serde_json::from_slice(&body).map_err(|_| {
            Problem::new(
                ProblemType::InvalidBody,
                "the body is {\"overlap_secs\": <seconds>} or empty",
            )
        })?
    };
    Ok(Json(state.app.webhooks.rotate(&org, &id, &request).await?))
}

/// `?status=&limit=` of the deliveries list.
#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `dead`; absent: all.
    status: Option<String>,
    /// 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// `GET /v1/webhook-endpoints/{id}/deliveries?status=dead`
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
#[instrument(skip_all, fields(organization_id = %org, endpoint_id = %id, webhook_delivery_id = %delivery_id))]
pub async fn retry(
    State(state): State<AppState>,
    Org(org): Org,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), Problem> {
    let view = state.app.webhooks.retry(&org, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
