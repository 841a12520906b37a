//! Reminder rules set through the API and an appointment's reminder plan: the service behind
//! `GET /v1/reminder-rules`, `PUT /v1/reminder-rules/{id}` and
//! `GET /v1/appointments/{filler_id}/reminders`, with their wire types. A rule is checked by
//! [`ReminderRule::validate`] before it is stored (a field error whose pointer names the field,
//! `/touches/1/before`); an organization has at most [`MAX_RULES`]; the rules set through the
//! API replace the configuration file's once any is set.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ReminderRule};
use crate::messages::rfc3339;
use crate::service::{Checks, Refusal, ServiceError};
use crate::store::{Store, StoreError};

/// Most reminder rules one organization may set through the API.
pub const MAX_RULES: usize = 50;

/// Where an organization's rules come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    /// The configuration file (no rule was set through the API).
    Config,
    /// Rules set through the API.
    Api,
}

/// `GET /v1/reminder-rules`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleSet {
    pub source: RuleSource,
    pub rules: Vec<ReminderRule>,
}

/// `GET /v1/appointments/{filler_id}/reminders`: every touch planned for the appointment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReminderPlan {
    /// The appointment's filler id.
    pub appointment: String,
    /// RFC 3339 (UTC).
    pub start: String,
    /// The appointment's status.
    pub status: String,
    pub touches: Vec<TouchView>,
}

/// One planned reminder.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TouchView {
    /// The rule's id.
    pub rule: String,
    /// The touch's id within the rule.
    pub touch: String,
    /// RFC 3339 (UTC).
    pub due_at: String,
    /// The appointment start the touch was planned for (RFC 3339, UTC).
    pub for_start: String,
    /// planned | sent | skipped | cancelled
    pub status: String,
    /// Why it was skipped or cancelled.
    pub reason: Option<String>,
    /// The channel it went (or was to go) out on.
    pub channel: Option<String>,
    /// The reminder message, once sent.
    pub message_id: Option<String>,
}

/// Reminder rules and plans of an organization.
#[derive(Clone)]
pub struct ReminderRules {
    pub store: Store,
    pub config: Arc<Config>,
}

impl ReminderRules {
    /// The rules in force: the API's, else the configuration's.
    pub async fn list(&self, organization_id: &str) -> Result<RuleSet, ServiceError> {
        let stored = self.store.reminders().rules(organization_id).await?;
        if stored.is_empty() {
            let slug = self.store.organizations().get(organization_id).await?.slug;
            return Ok(RuleSet {
                source: RuleSource::Config,
                rules: self.config.organization(&slug).reminder_rules,
            });
        }
        Ok(RuleSet {
            source: RuleSource::Api,
            rules: stored
                .iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect(),
        })
    }

    /// Sets the rule `id` (the body's `id` must be the same), then has every upcoming
    /// appointment planned again with the new rule set.
    pub async fn put(
        &self,
        organization_id: &str,
        id: &str,
        rule: ReminderRule,
    ) -> Result<ReminderRule, ServiceError> {
        let mut checks = Checks::new();
        checks.check(rule.id == id, "/id", "the rule's id must match the path");
        if let Err(e) = rule.validate() {
            checks.invalid(e.pointer.clone(), e.to_string());
        }
        checks.finish()?;
        let stored = self.store.reminders().rules(organization_id).await?;
        let replaces = stored
            .iter()
            .any(|d| serde_json::from_str::<serde_json::Value>(d).is_ok_and(|v| v["id"] == id));
        if !replaces && stored.len() >= MAX_RULES {
            return Err(ServiceError::Refused {
                refusal: Refusal::ReminderRuleLimit,
                detail: format!("an organization has at most {MAX_RULES} reminder rules"),
            });
        }
        let definition =
            serde_json::to_string(&rule).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.store
            .reminders()
            .put_rule(organization_id, id, &definition)
            .await?;
        // The next pass plans every upcoming appointment with the new rule set (an
        // organization skipped for an invalid rule is planned again once it is fixed).
        super::replan_all(&self.store).await?;
        Ok(rule)
    }

    /// The appointment's reminder plan, every skip with its reason.
    pub async fn plan(
        &self,
        organization_id: &str,
        filler_id: &str,
    ) -> Result<ReminderPlan, ServiceError> {
        let appointment = match self
            .store
            .appointments()
            .by_filler(organization_id, filler_id)
            .await
        {
            Err(StoreError::NotFound) => return Err(ServiceError::NotFound("appointment")),
            other => other?,
        };
        let touches =
            crate::reminders::plan_of(&self.store, &self.config, &appointment, chrono::Utc::now())
                .await
                .map_err(|e| match e {
                    crate::reminders::ReminderError::Store(e) => ServiceError::from(e),
                    other => ServiceError::Internal(other.to_string()),
                })?;
        Ok(ReminderPlan {
            appointment: appointment.filler_id,
            start: rfc3339(appointment.start_at),
            status: appointment.status,
            touches: touches
                .into_iter()
                .map(|t| TouchView {
                    rule: t.rule_id,
                    touch: t.touch_id,
                    due_at: rfc3339(t.due_at),
                    for_start: rfc3339(t.appointment_start),
                    status: t.status,
                    reason: t.reason,
                    channel: t.channel,
                    message_id: t.message_id,
                })
                .collect(),
        })
    }
}
