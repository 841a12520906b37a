//! The unmatched work queue: `GET /v1/inbound?status=unmatched`, `GET /v1/inbound/{id}` (with
//! the text, for the person resolving it) and `POST /v1/inbound/{id}/resolve {"patient": ...}`
//! (file it into that patient's thread).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::auth::Org;
use super::json::ApiJson;
use super::{AppState, Problem};
use crate::inbound::InboundSms;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default = "unmatched")]
    status: String,
    #[serde(default = "hundred")]
    limit: i64,
}

fn unmatched() -> String {
    "unmatched".into()
}
fn hundred() -> i64 {
    100
}

pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    if !matches!(
        query.status.as_str(),
        "received" | "unmatched" | "filed" | "processed" | "quarantined" | "resolved"
    ) {
        return Err(Problem::bad_request(
            "status must be received, unmatched, filed, processed, quarantined or resolved",
        ));
    }
    let items = state
        .store
        .inbound_items(&org, &query.status, query.limit.clamp(1, 1000))
        .await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let item = state.store.inbound_item(&org, &id).await?;
    let content = state
        .inbound
        .keyring
        .open(&item.raw, &item.id)
        .ok()
        .and_then(|raw| serde_json::from_slice::<InboundSms>(&raw).ok());
    let mut view = serde_json::to_value(&item).map_err(|_| Problem::internal())?;
    if let Some(sms) = content {
        view["body"] = sms.body.into();
        view["media"] = sms.media.into();
    }
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// The patient's external id.
    patient: String,
}

pub async fn resolve(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    let item = state.store.inbound_item(&org, &id).await?;
    if item.status == "filed" {
        return Err(Problem::new(
            axum::http::StatusCode::CONFLICT,
            "item is already filed",
        ));
    }
    let patient = state
        .store
        .patient_by_external_id(&org, &body.patient)
        .await
        .map_err(|_| Problem::unprocessable("patient not found"))?;
    let thread_id = state.inbound.resolve(&org, &id, &patient.id).await?;
    Ok(Json(
        serde_json::json!({ "id": id, "status": "filed", "thread_id": thread_id }),
    ))
}
