//! The unmatched work queue: `GET /v1/inbound?status=unmatched`, `GET /v1/inbound/{id}` (with
//! the text, for the person resolving it) and `POST /v1/inbound/{id}/resolve {"patient": ...}`
//! (file it into that patient's thread; 409 `inbound_already_filed` if it is). Wire types:
//! `crate::inbound`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use tracing::{Span, field, instrument};

use super::auth::Org;
use super::json::{ApiJson, ApiQuery};
use super::{AppState, Problem};
use crate::inbound::{InboundItemView, InboundList, InboundStatus, ResolveRequest, Resolved};

/// `?status=&limit=` of `GET /v1/inbound`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// received | unmatched (the default) | filed | processed | quarantined | resolved
    #[serde(default = "unmatched")]
    status: InboundStatus,
    /// 1 to 1000 (default 100).
    #[serde(default = "hundred")]
    limit: i64,
}

fn unmatched() -> InboundStatus {
    InboundStatus::Unmatched
}
fn hundred() -> i64 {
    100
}

/// `GET /v1/inbound`
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

/// `GET /v1/inbound/{id}`
#[instrument(skip_all, fields(organization_id = %org, inbound_item_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<InboundItemView>, Problem> {
    Ok(Json(state.app.inbound.show(&org, &id).await?))
}

/// `POST /v1/inbound/{id}/resolve`
#[instrument(skip_all, fields(organization_id = %org, inbound_item_id = %id, thread_id = field::Empty))]
pub async fn resolve(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> Result<Json<Resolved>, Problem> {
    let resolved = state.app.inbound.resolve_for(&org, &id, request).await?;
    Span::current().record("thread_id", field::display(&resolved.thread_id));
    Ok(Json(resolved))
}
