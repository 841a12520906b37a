//! The staff directory for urgent notifications (`PUT /v1/staff/{external_id}`,
//! `GET /v1/staff`) and read receipts (`POST /v1/messages/{id}/read`), which stop escalation.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::store::StaffInput;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffBody {
    name: String,
    #[serde(default)]
    sms: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// 1 = called first; absent = not on call.
    #[serde(default)]
    on_call_rank: Option<i64>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

pub async fn upsert(
    State(state): State<AppState>,
    Org(org): Org,
    Path(external_id): Path<String>,
    ApiJson(body): ApiJson<StaffBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    if external_id.is_empty() || external_id.len() > 128 {
        return Err(Problem::unprocessable(
            "external_id must be 1 to 128 characters",
        ));
    }
    if body.name.trim().is_empty() {
        return Err(Problem::unprocessable("name must not be empty"));
    }
    if body.on_call_rank.is_some_and(|r| r < 1) {
        return Err(Problem::unprocessable("on_call_rank starts at 1"));
    }
    if body.sms.is_none() && body.email.is_none() {
        return Err(Problem::unprocessable("give sms or email (or both)"));
    }
    let slug = state.store.organization(&org).await?.slug;
    let region = state.config.organization(&slug).phone_region;
    let sms = match &body.sms {
        Some(number) => Some(
            crate::phone::to_e164(number, &region)
                .map_err(|e| Problem::unprocessable(format!("sms: {e}")))?,
        ),
        None => None,
    };
    if body.email.as_deref().is_some_and(|e| !e.contains('@')) {
        return Err(Problem::unprocessable("email is not an address"));
    }
    let row = state
        .store
        .upsert_staff(
            &org,
            &StaffInput {
                external_id,
                name: body.name.trim().to_string(),
                sms,
                email: body.email,
                on_call_rank: body.on_call_rank,
                active: body.active,
            },
        )
        .await?;
    Ok(Json(
        serde_json::to_value(row).map_err(|_| Problem::internal())?,
    ))
}

pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
) -> Result<Json<serde_json::Value>, Problem> {
    let staff = state.store.staff(&org).await?;
    Ok(Json(serde_json::json!({ "staff": staff })))
}

pub async fn mark_read(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    // 404 for another organization's message.
    state.store.message(&org, &id).await?;
    state.store.mark_read(&org, &id).await?;
    state
        .store
        .record_event(
            &org,
            "message.read",
            &id,
            &serde_json::json!({"message_id": id}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
