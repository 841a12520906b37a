//! The HTTP surface (axum): API v1 under `/v1` (bearer API keys, one organization each),
//! health probes and metrics. Errors are `application/problem+json` (RFC 9457) and never leak
//! internals; request bodies are size-limited.

mod appointments;
mod auth;
mod health;
mod hooks;
mod inbound;
mod json;
mod messages;
mod patients;
mod problem;
mod reminders;
mod staff;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::channels::Connectors;
use crate::config::Config;
use crate::inbound::InboundService;
use crate::messages::{MessageError, MessageService, SendRequest};
use crate::store::Store;

pub use auth::{
    CACHE_TTL, Scope, format_scopes, hash_token, new_token, parse_scopes, required_scope,
};
pub use problem::Problem;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub messages: MessageService,
    pub inbound: InboundService,
    pub connectors: Connectors,
    pub config: Arc<Config>,
    pub keys: auth::KeyCache,
    /// The bearer token `/metrics` requires (`server.metrics_token`), read at start-up.
    pub metrics_token: Option<Arc<String>>,
}

impl AppState {
    pub fn new(
        messages: MessageService,
        inbound: InboundService,
        connectors: Connectors,
        config: Arc<Config>,
    ) -> Self {
        Self {
            store: messages.store.clone(),
            messages,
            inbound,
            connectors,
            config,
            keys: auth::KeyCache::default(),
            metrics_token: None,
        }
    }

    /// Sends a short answer (HELP, START) to a number as an outbound SMS message.
    pub async fn send_reply(
        &self,
        organization_id: &str,
        to: &str,
        text: &str,
    ) -> Result<String, MessageError> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("purpose".into(), "keyword_reply".into());
        let request = SendRequest::notice(
            None,
            "sms",
            to.to_string(),
            None,
            text.to_string(),
            metadata,
        );
        Ok(self
            .messages
            .accept(organization_id, &request, None)
            .await?
            .message_id)
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/{id}", get(messages::show))
        .route("/v1/messages/{id}/read", post(staff::mark_read))
        .route("/v1/staff", get(staff::list))
        .route("/v1/reminder-rules", get(reminders::rules))
        .route("/v1/reminder-rules/{id}", put(reminders::put_rule))
        .route(
            "/v1/appointments/{filler_id}/reminders",
            get(reminders::plan),
        )
        .route("/v1/staff/{external_id}", put(staff::upsert))
        .route("/v1/threads/{id}/messages", get(messages::thread_messages))
        .route(
            "/v1/patients/{external_id}",
            put(patients::upsert).get(patients::show),
        )
        .route(
            "/v1/patients/{external_id}/appointments",
            get(appointments::of_patient),
        )
        .route(
            "/v1/appointments/{filler_id}",
            put(appointments::upsert).get(appointments::show),
        )
        .route(
            "/v1/recalls/{external_id}",
            put(appointments::upsert_recall).get(appointments::show_recall),
        )
        .route("/v1/events", get(messages::events))
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/inbound/{id}", get(inbound::show))
        .route("/v1/inbound/{id}/resolve", post(inbound::resolve))
        .route("/hooks/{connector}/status", post(hooks::status))
        .route("/hooks/{connector}/inbound", post(hooks::inbound))
        .fallback(|| async { Problem::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
