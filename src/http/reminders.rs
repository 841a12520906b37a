//! Reminder rules per organization (`GET /v1/reminder-rules`, `PUT /v1/reminder-rules/{id}`,
//! replacing the config file's rules once any is set) and an appointment's reminder plan with
//! every skip and its reason (`GET /v1/appointments/{filler_id}/reminders`). A rule is checked
//! by [`ReminderRule::validate`] before it is stored: a 422 problem whose `pointer` names the
//! field (`/touches/1/before`); an organization has at most 50 rules.

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::config::ReminderRule;
use crate::store::StoreError;

/// Most reminder rules one organization may set through the API.
const MAX_RULES: usize = 50;

pub async fn rules(
    State(state): State<AppState>,
    Org(org): Org,
) -> Result<Json<serde_json::Value>, Problem> {
    let stored = state.store.reminder_rules(&org).await?;
    let (source, rules): (&str, Vec<serde_json::Value>) = if stored.is_empty() {
        let slug = state.store.organization(&org).await?.slug;
        let rules = state.config.organization(&slug).reminder_rules;
        (
            "config",
            rules
                .iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect(),
        )
    } else {
        (
            "api",
            stored
                .iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect(),
        )
    };
    Ok(Json(
        serde_json::json!({ "source": source, "rules": rules }),
    ))
}

pub async fn put_rule(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiJson(rule): ApiJson<ReminderRule>,
) -> Result<Json<serde_json::Value>, Problem> {
    if rule.id != id {
        return Err(Problem::invalid_field(
            "/id",
            "the rule's id must match the path",
        ));
    }
    rule.validate()
        .map_err(|e| Problem::invalid_field(e.pointer.clone(), e.to_string()))?;
    let stored = state.store.reminder_rules(&org).await?;
    let replaces = stored.iter().any(|d| {
        serde_json::from_str::<serde_json::Value>(d).is_ok_and(|v| v["id"] == id.as_str())
    });
    if !replaces && stored.len() >= MAX_RULES {
        return Err(Problem::unprocessable(format!(
            "an organization has at most {MAX_RULES} reminder rules"
        )));
    }
    let definition = serde_json::to_string(&rule).map_err(|_| Problem::internal())?;
    state
        .store
        .put_reminder_rule(&org, &id, &definition)
        .await?;
    // The next pass plans every upcoming appointment with the new rule set (an organization
    // skipped for an invalid rule is planned again once it is fixed).
    crate::reminders::replan_all(&state.store).await?;
    Ok(Json(
        serde_json::to_value(&rule).map_err(|_| Problem::internal())?,
    ))
}

pub async fn plan(
    State(state): State<AppState>,
    Org(org): Org,
    Path(filler_id): Path<String>,
) -> Result<Json<serde_json::Value>, Problem> {
    let appointment = match state.store.appointment_by_filler(&org, &filler_id).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => return Err(Problem::not_found("appointment not found")),
        Err(e) => return Err(e.into()),
    };
    let touches = state.store.touches_of(&appointment.id).await?;
    let touches: Vec<serde_json::Value> = touches
        .iter()
        .map(|t| {
            serde_json::json!({
                "rule": t.rule_id, "touch": t.touch_id, "due_at": crate::messages::rfc3339(t.due_at),
                "for_start": crate::messages::rfc3339(t.appointment_start), "status": t.status,
                "reason": t.reason, "channel": t.channel, "message_id": t.message_id,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "appointment": filler_id,
        "start": crate::messages::rfc3339(appointment.start_at),
        "status": appointment.status,
        "touches": touches,
    })))
}
