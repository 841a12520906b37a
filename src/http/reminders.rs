//! Reminder rules per organization (`GET /v1/reminder-rules`, `PUT /v1/reminder-rules/{id}`)
//! and an appointment's reminder plan (`GET /v1/appointments/{filler_id}/reminders`). Wire
//! types and rules: `crate::reminders::rules` (a rule that fails validation is a 422 whose
//! `errors` point at the field, `/touches/1/before`; at most 50 rules:
//! `reminder_rule_limit`).

use axum::Json;
use axum::extract::{Path, State};
use tracing::instrument;

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::config::ReminderRule;
use crate::reminders::rules::{ReminderPlan, RuleSet};

/// `GET /v1/reminder-rules`
#[utoipa::path(
    get,
    path = "/v1/reminder-rules",
    tag = "reminders",
    operation_id = "reminders_rules",
    summary = "The organization's reminder rules",
    responses(
        (status = 200, description = "The rules", body = RuleSet)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn rules(State(state): State<AppState>, Org(org): Org) -> Result<Json<RuleSet>, Problem> {
    Ok(Json(state.app.reminder_rules.list(&org).await?))
}

/// `PUT /v1/reminder-rules/{id}`: 200 with the rule as stored.
#[utoipa::path(
    put,
    path = "/v1/reminder-rules/{id}",
    tag = "reminders",
    operation_id = "put_rule",
    summary = "Create or replace a reminder rule",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    request_body = ReminderRule,
    responses(
        (status = 200, description = "The rule as stored", body = ReminderRule)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, rule_id = %id))]
pub async fn put_rule(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiJson(rule): ApiJson<ReminderRule>,
) -> Result<Json<ReminderRule>, Problem> {
    Ok(Json(state.app.reminder_rules.put(&org, &id, rule).await?))
}

/// `GET /v1/appointments/{filler_id}/reminders`
#[utoipa::path(
    get,
    path = "/v1/appointments/{filler_id}/reminders",
    tag = "reminders",
    operation_id = "plan",
    summary = "An appointment's reminder plan",
    params(
        ("filler_id" = String, Path, description = "The scheduling system's appointment id (SIU filler id).")
    ),
    responses(
        (status = 200, description = "The plan", body = ReminderPlan)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn plan(
    State(state): State<AppState>,
    Org(org): Org,
    Path(filler_id): Path<String>,
) -> Result<Json<ReminderPlan>, Problem> {
    Ok(Json(state.app.reminder_rules.plan(&org, &filler_id).await?))
}
