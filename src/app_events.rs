//! The messaging app's own events as triggers (`POST /v1/app-events`), in the platform's names:
//!
//! - `pm_message_sent`: a message posted in the app with external recipients → accepted and
//!   delivered through the message service, idempotent by the app's message id (used as the
//!   message's idempotency key: the same id again returns the same message; the same id with
//!   another message is refused, 409).
//! - `pm_urgent_message_sent`: a message the gateway knows (by the app's message id, else by
//!   the gateway's) is urgent → an `urgent_message_sent` event, which the urgent notifier acts
//!   on as it does for every urgent message (once per message, whoever writes the event).
//!
//! The app's `chart_documented` flag is carried in the message's metadata and in its
//! `message.accepted` event, never interpreted. A request is bound to its organization by the
//! API key (`send` scope) or by the secret it is signed with (Standard Webhooks, the secrets
//! of `[webhooks] app_secrets`, one per organization) — never by anything in the body.
//!
//! On PostgreSQL the same events may also arrive by `NOTIFY` on a channel of
//! `[webhooks] app_listen` ([`listen`]): the channel binds the organization. `NOTIFY` is not
//! durable, so this is a low-latency path beside the POST; a redelivered or re-posted event is
//! harmless (idempotent by the app's message id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::messages::{MessageError, MessageService, SendRequest};
use crate::service::{FieldError, Location, ServiceError};
use crate::store::{Store, StoreError};

/// The longest app message id.
const MAX_APP_ID: usize = 200;

/// `POST /v1/app-events`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppEvent {
    /// `pm_message_sent` or `pm_urgent_message_sent`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The platform's payload version (1).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1)]
    pub event_version: u32,
    pub data: serde_json::Value,
}

fn one() -> u32 {
    1
}

/// `data` of `pm_message_sent`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PmMessageSent {
    /// The app's message id: the idempotency key.
    pub message_id: String,
    /// The app's flag, carried in the message's metadata untouched.
    #[serde(default)]
    pub chart_documented: Option<bool>,
    /// What to send, as `POST /v1/messages` takes it.
    pub message: SendRequest,
}

/// `data` of `pm_urgent_message_sent`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PmUrgentMessageSent {
    /// The app's message id (as sent with `pm_message_sent`), or the gateway's `msg_…` id.
    pub message_id: String,
}

/// The answer: the gateway's message, and whether it had been accepted before.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AppEventOutcome {
    #[serde(rename = "type")]
    pub kind: String,
    pub message_id: String,
    pub replayed: bool,
}

/// The app's events in.
#[derive(Clone)]
pub struct AppEventService {
    pub store: Store,
    pub messages: MessageService,
    pub config: Arc<Config>,
}

impl AppEventService {
    /// The organization whose `[webhooks] app_secrets` secret signed this request (Standard
    /// Webhooks headers, timestamp within five minutes), or `None`.
    pub async fn signed_by(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
    ) -> Result<Option<String>, ServiceError> {
        let now = crate::store::now_ms() / 1000;
        for (slug, secret) in &self.config.webhooks.app_secrets {
            let key = match secret.read() {
                Ok(text) => crate::webhooks::signature::secret_key(&text),
                Err(e) => {
                    tracing::warn!(organization = %slug, error = %e, "webhooks.app_secrets: secret unreadable");
                    None
                }
            };
            let Some(key) = key else { continue };
            if crate::webhooks::signature::verify(&[key], id, timestamp, signatures, body, now)
                .is_ok()
            {
                return Ok(self.store.organizations().id_by_slug(slug).await?);
            }
        }
        Ok(None)
    }

    pub async fn receive(
        &self,
        organization_id: &str,
        event: AppEvent,
    ) -> Result<AppEventOutcome, ServiceError> {
        if event.event_version != 1 {
            return Err(invalid("/event_version", "version 1 is the one understood"));
        }
        match event.kind.as_str() {
            "pm_message_sent" => {
                let data: PmMessageSent = parse(event.data)?;
                check_app_id(&data.message_id)?;
                let mut request = data.message;
                if let Some(flag) = data.chart_documented {
                    request
                        .metadata
                        .insert("chart_documented".into(), flag.into());
                }
                let accepted = self
                    .messages
                    .accept_from_client(organization_id, request, Some(&data.message_id))
                    .await
                    .map_err(|e| ServiceError::Message(under_data_message(e)))?;
                Ok(AppEventOutcome {
                    kind: event.kind,
                    message_id: accepted.message_id,
                    replayed: accepted.replayed,
                })
            }
            "pm_urgent_message_sent" => {
                let data: PmUrgentMessageSent = parse(event.data)?;
                check_app_id(&data.message_id)?;
                let message_id = match self
                    .store
                    .messages()
                    .for_idempotency_key(organization_id, &data.message_id)
                    .await?
                {
                    Some(id) => id,
                    None => match self
                        .store
                        .messages()
                        .get(organization_id, &data.message_id)
                        .await
                    {
                        Ok(row) => row.id,
                        Err(StoreError::NotFound) => {
                            return Err(invalid(
                                "/data/message_id",
                                "no message of this organization has this id (send it with pm_message_sent first)",
                            ));
                        }
                        Err(e) => return Err(e.into()),
                    },
                };
                self.store
                    .events()
                    .record(
                        organization_id,
                        "urgent_message_sent",
                        &message_id,
                        &serde_json::json!({ "message_id": message_id }),
                    )
                    .await?;
                Ok(AppEventOutcome {
                    kind: event.kind,
                    message_id,
                    replayed: false,
                })
            }
            _ => Err(invalid(
                "/type",
                "pm_message_sent or pm_urgent_message_sent",
            )),
        }
    }
}

fn invalid(pointer: &str, detail: &str) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::pointer(pointer, detail)])
}

fn check_app_id(id: &str) -> Result<(), ServiceError> {
    let ok = !id.is_empty() && id.len() <= MAX_APP_ID && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "/data/message_id",
            "1 to 200 visible ASCII characters",
        ))
    }
}

/// `data` as the kind's type; a field at fault is named by its pointer under `/data`.
fn parse<T: serde::de::DeserializeOwned>(data: serde_json::Value) -> Result<T, ServiceError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        let pointer = if path == "." {
            "/data".to_string()
        } else {
            format!(
                "/data/{}",
                path.split('.')
                    .map(|segment| segment.trim_start_matches('[').trim_end_matches(']'))
                    .collect::<Vec<_>>()
                    .join("/")
            )
        };
        ServiceError::Invalid(vec![FieldError::pointer(
            pointer,
            "missing, of the wrong type, or not a field of this event",
        )])
    })
}

/// The message service's pointers are into a `POST /v1/messages` body; here it is
/// `/data/message`.
fn under_data_message(error: MessageError) -> MessageError {
    match error {
        MessageError::Invalid {
            field,
            reason,
            at: Location::Pointer(pointer),
        } => MessageError::Invalid {
            field,
            reason,
            at: Location::Pointer(format!("/data/message{pointer}")),
        },
        MessageError::ChannelNotConfigured {
            field,
            pointer,
            channel,
        } => MessageError::ChannelNotConfigured {
            field,
            pointer: format!("/data/message{pointer}"),
            channel,
        },
        other => other,
    }
}

/// `[webhooks] app_listen` notifications taken (this process), for `/metrics`.
pub static LISTEN_ACCEPTED: AtomicU64 = AtomicU64::new(0);
/// Notifications whose payload is not an app event (not JSON, or not the envelope).
pub static LISTEN_MALFORMED: AtomicU64 = AtomicU64::new(0);
/// Notifications that parsed but were refused (invalid data, a conflict) or failed.
pub static LISTEN_REFUSED: AtomicU64 = AtomicU64::new(0);

/// `LISTEN`s on every `[webhooks] app_listen` channel and takes each notification's payload as
/// `POST /v1/app-events` takes its body, for the organization the channel is bound to
/// (`channels`: channel → organization id). A payload that is not an app event, or an event
/// refused, is logged with ids only and counted; the task goes on. A lost connection is
/// re-established (what was notified meanwhile is lost, which is why the app also POSTs).
/// Returns on `shutdown`, or with the error when reconnecting fails (the supervisor starts it
/// again). On SQLite: nothing.
pub async fn listen(
    service: AppEventService,
    channels: Arc<BTreeMap<String, String>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), sqlx::Error> {
    if channels.is_empty() {
        return Ok(());
    }
    let Some(mut listener) = service.store.listener().await? else {
        return Ok(());
    };
    listener
        .listen_all(channels.keys().map(String::as_str))
        .await?;
    tracing::info!(channels = channels.len(), "listening for app events");
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            notification = listener.try_recv() => notification?,
        };
        // `None`: the connection was lost; the next call reconnects and listens again. What
        // was notified meanwhile is lost (the app's POST is the durable path).
        let Some(notification) = notification else {
            tracing::warn!(
                "app event LISTEN connection lost; reconnecting (notifications meanwhile are lost)"
            );
            continue;
        };
        let channel = notification.channel();
        let Some(organization_id) = channels.get(channel) else {
            continue;
        };
        let pid = notification.process_id();
        let event: AppEvent = match serde_json::from_str(notification.payload()) {
            Ok(event) => event,
            Err(_) => {
                LISTEN_MALFORMED.fetch_add(1, Relaxed);
                tracing::warn!(
                    channel,
                    organization_id = %organization_id,
                    sender_pid = pid,
                    payload_bytes = notification.payload().len(),
                    "app event notification is not an app event; ignored"
                );
                continue;
            }
        };
        match service.receive(organization_id, event).await {
            Ok(outcome) => {
                LISTEN_ACCEPTED.fetch_add(1, Relaxed);
                tracing::info!(
                    channel,
                    organization_id = %organization_id,
                    message_id = %outcome.message_id,
                    replayed = outcome.replayed,
                    kind = %outcome.kind,
                    "app event taken by LISTEN"
                );
            }
            Err(error) => {
                LISTEN_REFUSED.fetch_add(1, Relaxed);
                tracing::warn!(
                    channel,
                    organization_id = %organization_id,
                    sender_pid = pid,
                    refusal = refusal_kind(&error),
                    "app event notification refused"
                );
            }
        }
    }
}

/// What kind of refusal, without its detail (which may quote the payload).
fn refusal_kind(error: &ServiceError) -> &'static str {
    match error {
        ServiceError::Invalid(_) => "invalid",
        ServiceError::NotFound(_) => "not_found",
        ServiceError::Refused { .. } => "refused",
        ServiceError::Message(_) => "message",
        ServiceError::Store(_) => "store",
        ServiceError::Crypto(_) => "crypto",
        ServiceError::Internal(_) => "internal",
    }
}
