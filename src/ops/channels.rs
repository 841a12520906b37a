//! Channels and connectors as an operator runs them: `GET /v1/channels` (state ok / failing /
//! paused, the pause's time and author, counts, queue depth, oldest waiting delivery) and the
//! pauses, `POST /v1/channels/{channel}/pause|resume` and `POST /v1/connectors/{name}/pause|
//! resume`. A pause is fleet-wide (the `pauses` table) and audited (`channel_paused`,
//! `channel_resumed`, `connector_paused`, `connector_resumed`); a resume enqueues what waited.

use serde::{Deserialize, Serialize};

use super::Ops;
use crate::connectors::redact_numbers;
use crate::domain::Channel;
use crate::messages::rfc3339;
use crate::service::{FieldError, ServiceError};
use crate::store::{AuditEntry, PauseRow};

/// Who paused, when, why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Paused {
    /// RFC 3339 (UTC).
    pub paused_at: String,
    pub paused_by: String,
    pub reason: Option<String>,
    /// `channel`, or `connector` when the channel waits for its connector.
    pub kind: String,
}

/// One channel, for the caller's organization.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelState {
    pub channel: String,
    /// The connector it is routed to.
    pub connector: Option<String>,
    /// `ok`, `failing` (its latest outcome today was a failure) or `paused`.
    pub state: String,
    pub paused: Option<Paused>,
    /// Deliveries created in the last hour, by status.
    pub last_hour: std::collections::BTreeMap<String, i64>,
    /// Deliveries created in the last 24 hours, by status.
    pub last_day: std::collections::BTreeMap<String, i64>,
    /// Queued or sending.
    pub queue_depth: i64,
    /// Age of the oldest waiting delivery, seconds.
    pub oldest_waiting_secs: Option<i64>,
    /// Deliveries that reached sent/delivered (or dispatched/processed, Direct) per minute,
    /// over the last five minutes.
    pub per_minute: f64,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// The latest failure's reason, numbers masked.
    pub last_error: Option<String>,
}

/// One connector.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectorState {
    pub name: String,
    /// The channels routed to it.
    pub channels: Vec<String>,
    /// `ok`, `failing` (one of its channels is) or `paused`.
    pub state: String,
    pub paused: Option<Paused>,
}

/// `GET /v1/channels`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelsView {
    pub channels: Vec<ChannelState>,
    pub connectors: Vec<ConnectorState>,
}

/// The optional body of a pause.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why (no PHI), shown with the state.
    pub reason: Option<String>,
}

/// What a pause or resume did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PauseView {
    /// `channel` or `connector`.
    pub kind: String,
    pub name: String,
    /// Whether it is paused now.
    pub paused: bool,
    /// False when it already was in that state (nothing changed).
    pub changed: bool,
    /// Deliveries that waited and were enqueued again (resume only).
    pub enqueued: usize,
}

fn paused(row: &PauseRow) -> Paused {
    Paused {
        paused_at: rfc3339(row.paused_at),
        paused_by: row.paused_by.clone(),
        reason: row.reason.clone(),
        kind: row.kind.clone(),
    }
}

impl Ops {
    /// `GET /v1/channels`: every channel (figures of the caller's organization) and connector.
    pub async fn channels(&self, organization_id: &str) -> Result<ChannelsView, ServiceError> {
        let pauses = self.store.pauses().all().await?;
        let now = crate::store::now_ms();
        let mut channels = Vec::new();
        for channel in Channel::NAMES {
            let figures = self
                .store
                .pauses()
                .figures(organization_id, channel)
                .await?;
            let pause = self.routes.pause_of(channel, &pauses);
            let failing = match (figures.last_failure_at, figures.last_success_at) {
                (Some(failed), Some(sent)) => failed > sent,
                (Some(_), None) => true,
                _ => false,
            };
            let state = match (pause, failing) {
                (Some(_), _) => "paused",
                (None, true) => "failing",
                (None, false) => "ok",
            };
            channels.push(ChannelState {
                channel: channel.to_string(),
                connector: self.routes.connector(channel).map(str::to_string),
                state: state.into(),
                paused: pause.map(paused),
                last_hour: figures
                    .by_status
                    .iter()
                    .filter(|(_, hour, _)| *hour > 0)
                    .map(|(status, hour, _)| (status.clone(), *hour))
                    .collect(),
                last_day: figures
                    .by_status
                    .iter()
                    .map(|(status, _, day)| (status.clone(), *day))
                    .collect(),
                queue_depth: figures.waiting,
                oldest_waiting_secs: figures.oldest_waiting_at.map(|at| (now - at).max(0) / 1000),
                per_minute: figures.recent_successes as f64
                    / (crate::store::RECENT_MS as f64 / 60_000.0),
                last_success_at: figures.last_success_at.map(rfc3339),
                last_failure_at: figures.last_failure_at.map(rfc3339),
                last_error: figures.last_failure.as_deref().map(redact_error),
            });
        }
        let connectors = self
            .connector_names
            .iter()
            .map(|name| {
                let routed = self.routes.channels_of(name);
                let pause = pauses
                    .iter()
                    .find(|p| p.kind == "connector" && &p.name == name);
                let failing = channels
                    .iter()
                    .any(|c| routed.contains(&c.channel) && c.state == "failing");
                ConnectorState {
                    name: name.clone(),
                    state: match (pause, failing) {
                        (Some(_), _) => "paused",
                        (None, true) => "failing",
                        (None, false) => "ok",
                    }
                    .into(),
                    paused: pause.map(paused),
                    channels: routed,
                }
            })
            .collect();
        Ok(ChannelsView {
            channels,
            connectors,
        })
    }

    /// Pauses (`pause` true) or resumes a channel or connector, audited against the caller's
    /// organization. A resume enqueues the deliveries that waited (unless another pause still
    /// holds them).
    pub async fn set_paused(
        &self,
        organization_id: &str,
        actor: &str,
        kind: &str,
        name: &str,
        pause: bool,
        reason: Option<&str>,
    ) -> Result<PauseView, ServiceError> {
        let (parameter, known) = match kind {
            "channel" => ("channel", name.parse::<Channel>().is_ok()),
            _ => ("name", self.connector_names.iter().any(|c| c == name)),
        };
        if !known {
            return Err(ServiceError::Invalid(vec![FieldError::parameter(
                parameter,
                format!("no {kind} named {name:?}"),
            )]));
        }
        if let Some(reason) = reason
            && reason.chars().count() > 500
        {
            return Err(ServiceError::invalid("/reason", "at most 500 characters"));
        }
        let audit = AuditEntry {
            organization_id: organization_id.to_string(),
            action: format!("{kind}_{}", if pause { "paused" } else { "resumed" }),
            actor: actor.to_string(),
            channel: (kind == "channel").then(|| name.to_string()),
            detail: Some(match reason {
                Some(reason) => format!("{kind} {name}: {reason}"),
                None => format!("{kind} {name}"),
            }),
            ..Default::default()
        };
        let changed = if pause {
            self.store
                .pauses()
                .pause(kind, name, actor, reason, &audit)
                .await?
        } else {
            self.store.pauses().resume(kind, name, &audit).await?
        };
        let mut enqueued = 0;
        if !pause {
            let channels = match kind {
                "channel" => vec![name.to_string()],
                _ => self.routes.channels_of(name),
            };
            let held =
                crate::queue::pause::held_deliveries(&self.store, &self.routes, &channels).await?;
            enqueued = held.len();
            let ids: Vec<String> = held.iter().map(|(_, id)| id.clone()).collect();
            self.store
                .deliveries()
                .mark_enqueued(&ids, crate::store::now_ms())
                .await?;
            self.group.enqueue(held).await;
        }
        Ok(PauseView {
            kind: kind.to_string(),
            name: name.to_string(),
            paused: pause,
            changed,
            enqueued,
        })
    }
}

/// A failure reason as the console and the channel list show it: numbers masked (a reason
/// may quote an address), at most 200 characters.
fn redact_error(reason: &str) -> String {
    let masked = redact_numbers(reason);
    match masked.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &masked[..at]),
        None => masked,
    }
}
