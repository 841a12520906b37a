//! The HTTP surface (axum): API v1 under `/v1` (bearer API keys, one organization each),
//! health probes and metrics. Errors are `application/problem+json` (RFC 9457) and never leak
//! internals; request bodies are size-limited. The server's own guards live in `guard`:
//! header-read and request timeouts, a concurrency limit, and a panic-catching layer.

mod appointments;
mod auth;
mod guard;
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
pub use guard::HTTP_PANICS;
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
    /// Which organization owns the number an inbound item was sent to.
    pub tenancy: Arc<crate::tenancy::Tenancy>,
    /// Panics and restarts of the daemon's supervised tasks, shown at `/metrics` (a layer that
    /// catches panics itself may count them here too).
    pub tasks: crate::supervise::TaskMetrics,
    /// The bearer token `/metrics` requires (`server.metrics_token`), read at start-up.
    pub metrics_token: Option<Arc<String>>,
}

impl AppState {
    pub fn new(
        messages: MessageService,
        inbound: InboundService,
        connectors: Connectors,
        config: Arc<Config>,
        tenancy: Arc<crate::tenancy::Tenancy>,
    ) -> Self {
        Self {
            store: messages.store.clone(),
            messages,
            inbound,
            connectors,
            config,
            keys: auth::KeyCache::default(),
            tenancy,
            tasks: crate::supervise::TaskMetrics::default(),
            metrics_token: None,
        }
    }

    /// Sends an answer to an inbound text (HELP, START, a reminder answer) as an outbound SMS
    /// message, in the patient's open thread when the sender is a known patient.
    pub async fn send_reply(
        &self,
        organization_id: &str,
        to: &str,
        reply: &crate::inbound::Reply,
    ) -> Result<String, MessageError> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("purpose".into(), reply.purpose.into());
        let mut request = SendRequest::notice(
            None,
            crate::domain::Channel::Sms.as_str(),
            to.to_string(),
            None,
            reply.text.clone(),
            metadata,
        );
        request.part2 = reply.part2;
        let accepted = match &reply.patient_id {
            None => {
                self.messages
                    .accept(organization_id, &request, None)
                    .await?
            }
            Some(patient_id) => {
                let open = self
                    .store
                    .open_thread_of(organization_id, patient_id)
                    .await?;
                let thread = crate::messages::ResolvedThread {
                    new_thread_category: open.is_none().then(|| "administrative".to_string()),
                    thread_id: open.map_or_else(|| crate::store::new_id("thr"), |t| t.id),
                    patient_id: Some(patient_id.clone()),
                };
                self.messages
                    .accept_in_thread(organization_id, &request, None, thread)
                    .await?
            }
        };
        Ok(accepted.message_id)
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    let router = Router::new()
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
        .layer(DefaultBodyLimit::max(limit));
    guard::layers(router, &state.config.server).with_state(state)
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests. A connection whose
/// request head does not arrive within `server.header_timeout_secs` is closed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let header_timeout =
        std::time::Duration::from_secs(state.config.server.header_timeout_secs.max(1));
    guard::serve(listener, router(state), header_timeout, shutdown).await
}
