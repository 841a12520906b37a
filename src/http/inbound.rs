//! The unmatched work queue: `GET /v1/inbound?status=unmatched` (with candidates),
//! `GET /v1/inbound/{id}` (with the text and the pipeline's steps, for the person deciding),
//! and the decisions, audited under the caller's key: `POST /v1/inbound/{id}/resolve
//! {"patient": ...}` (file it into that patient's thread; 409 `inbound_already_filed` if it
//! is), `.../reassign {"patient": ..., "reason"?}` (move a filed item's message to another
//! patient) and `.../dismiss {"reason": ...}`; a decision the item's state does not allow is
//! 409 `inbound_wrong_state`. Wire types: `crate::inbound`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use tracing::{Span, field, instrument};

use super::auth::{Caller, Org};
use super::json::{ApiJson, ApiQuery};
use super::{AppState, Problem};
use crate::inbound::{
    DismissRequest, Dismissed, InboundItemView, InboundList, InboundStatus, ReassignRequest,
    ResolveRequest, Resolved,
};

/// `?status=&limit=` of `GET /v1/inbound`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// received | unmatched (the default) | filed | processed | dismissed
    #[serde(default = "unmatched")]
    status: InboundStatus,
    /// 1 to 1000 (default 100).
    #[serde(default = "hundred")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

fn unmatched() -> InboundStatus {
    InboundStatus::Unmatched
}
fn hundred() -> i64 {
    100
}

/// `GET /v1/inbound`
#[utoipa::path(
    get,
    path = "/v1/inbound",
    tag = "inbound",
    operation_id = "inbound_list",
    summary = "The inbound work queue",
    params(
        ListQuery
    ),
    responses(
        (status = 200, description = "The items", body = InboundList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<InboundList>, Problem> {
    Ok(Json(
        state
            .app
            .inbound
            .list(&org, query.status, query.limit)
            .await?,
    ))
}

/// `?limit=` of `GET /v1/direct/quarantine`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// 1 to 1000 (default 100).
    #[serde(default = "hundred")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// `GET /v1/direct/quarantine` (admin scope): Direct messages that failed a trust check.
#[utoipa::path(
    get,
    path = "/v1/direct/quarantine",
    tag = "inbound",
    operation_id = "direct_quarantine",
    summary = "Quarantined Direct messages",
    params(
        QuarantineQuery
    ),
    responses(
        (status = 200, description = "The items", body = InboundList)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn direct_quarantine(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<QuarantineQuery>,
) -> Result<Json<InboundList>, Problem> {
    Ok(Json(
        state
            .app
            .inbound
            .direct_quarantine(&org, query.limit)
            .await?,
    ))
}

/// `POST /v1/direct/quarantine/{id}/release` (admin scope): the message's trust checks run
/// again; the answer is the item as it now stands (filed, unmatched, or still quarantined with
/// the new reason). 404 for an item of another organization, 409 `inbound_wrong_state` for an
/// item that is not a quarantined Direct message.
#[utoipa::path(
    post,
    path = "/v1/direct/quarantine/{id}/release",
    tag = "inbound",
    operation_id = "release_quarantined",
    summary = "Run a quarantined Direct message's trust checks again",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The item as it now stands", body = InboundItemView),
        (status = 409, description = "Not a quarantined Direct message", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id, inbound_item_id = %id))]
pub async fn release_quarantined(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InboundItemView>, Problem> {
    Ok(Json(
        state
            .app
            .inbound
            .release_quarantined(&caller.organization_id, &id, &caller.actor())
            .await?,
    ))
}

/// `GET /v1/inbound/{id}`
#[utoipa::path(
    get,
    path = "/v1/inbound/{id}",
    tag = "inbound",
    operation_id = "inbound_show",
    summary = "An inbound item",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The item", body = InboundItemView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, inbound_item_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<InboundItemView>, Problem> {
    Ok(Json(state.app.inbound.show(&org, &id).await?))
}

/// `POST /v1/inbound/{id}/resolve`
#[utoipa::path(
    post,
    path = "/v1/inbound/{id}/resolve",
    tag = "inbound",
    operation_id = "resolve",
    summary = "File an item into a patient's thread",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Filed", body = Resolved),
        (status = 409, description = "Already filed, or not in a state for this", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id, inbound_item_id = %id, thread_id = field::Empty))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> Result<Json<Resolved>, Problem> {
    let resolved = state
        .app
        .inbound
        .resolve_for(&caller.organization_id, &id, request, &caller.actor())
        .await?;
    Span::current().record("thread_id", field::display(&resolved.thread_id));
    Ok(Json(resolved))
}

/// `POST /v1/inbound/{id}/reassign`
#[utoipa::path(
    post,
    path = "/v1/inbound/{id}/reassign",
    tag = "inbound",
    operation_id = "reassign",
    summary = "Move a filed item to another patient",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    request_body = ReassignRequest,
    responses(
        (status = 200, description = "Moved", body = Resolved),
        (status = 409, description = "Not in a state for this", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id, inbound_item_id = %id, thread_id = field::Empty))]
pub async fn reassign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ReassignRequest>,
) -> Result<Json<Resolved>, Problem> {
    let moved = state
        .app
        .inbound
        .reassign(&caller.organization_id, &id, request, &caller.actor())
        .await?;
    Span::current().record("thread_id", field::display(&moved.thread_id));
    Ok(Json(moved))
}

/// `POST /v1/inbound/{id}/dismiss`
#[utoipa::path(
    post,
    path = "/v1/inbound/{id}/dismiss",
    tag = "inbound",
    operation_id = "dismiss",
    summary = "Dismiss an item",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    request_body = DismissRequest,
    responses(
        (status = 200, description = "Dismissed", body = Dismissed),
        (status = 409, description = "Already filed, or not in a state for this", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %caller.organization_id, key_id = %caller.key_id, inbound_item_id = %id))]
pub async fn dismiss(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<DismissRequest>,
) -> Result<Json<Dismissed>, Problem> {
    Ok(Json(
        state
            .app
            .inbound
            .dismiss(&caller.organization_id, &id, request, &caller.actor())
            .await?,
    ))
}
