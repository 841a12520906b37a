//! The HTTP surface (axum): API v1 under `/v1` (bearer API keys, one organization each),
//! provider webhooks under `/hooks`, health probes and metrics. Handlers are thin: they read
//! typed requests, call a service of [`App`] and answer with its typed response (the wire
//! types live with each service: `messages`, `patients`, `appointments`, `staff`, `inbound`,
//! `events`, `reminders::rules`, `campaigns::service`); no handler touches the records directly. Every handler is
//! traced with ids only. Errors are `application/problem+json` (RFC 9457) with a stable `type`
//! per error and per-field `errors`, and never leak internals; request bodies are size-limited. The server's own guards live in `guard`:
//! header-read and request timeouts, a concurrency limit, and a panic-catching layer.

mod app_events;
mod appointments;
mod attachments;
mod auth;
mod campaigns;
mod channels;
mod console;
mod deliveries;
mod events;
mod guard;
mod health;
mod hl7;
mod hooks;
mod inbound;
mod json;
mod messages;
mod openapi;
mod patients;
mod problem;
mod reminders;
mod staff;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::connectors::Connectors;

pub use auth::{
    CACHE_TTL, Scope, format_scopes, hash_token, new_token, parse_scopes, required_scope,
};
pub use guard::HTTP_PANICS;
pub use openapi::{document as openapi_document, json_text as openapi_json};
pub use problem::{Problem, ProblemType};

/// What handlers share: the services (handlers reach no records but through them) and what
/// the edge itself needs (connectors for webhooks, the key cache, metrics).
#[derive(Clone)]
pub struct AppState {
    /// Shared: axum clones the state for every request (and extractor).
    pub app: Arc<App>,
    pub connectors: Connectors,
    pub config: Arc<Config>,
    pub keys: auth::KeyCache,
    /// Panics and restarts of the daemon's supervised tasks, shown at `/metrics` (a layer that
    /// catches panics itself may count them here too).
    pub tasks: crate::supervise::TaskMetrics,
    /// The bearer token `/metrics` requires (`server.metrics_token`), read at start-up.
    pub metrics_token: Option<Arc<String>>,
    /// Received faxes (fax connectors' inbound webhooks); set by the daemon.
    pub fax_inbound: Option<Arc<crate::inbound::fax::FaxInbound>>,
}

impl AppState {
    pub fn new(app: App, connectors: Connectors, config: Arc<Config>) -> Self {
        Self {
            app: Arc::new(app),
            connectors,
            config,
            keys: auth::KeyCache::default(),
            tasks: crate::supervise::TaskMetrics::default(),
            metrics_token: None,
            fax_inbound: None,
        }
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    // A message may carry attachments: its body may be as large as they are, base64-encoded.
    let message_limit = state.config.limits.message_body_bytes(limit);
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::serve))
        .route(
            "/v1/messages",
            post(messages::create)
                .layer(DefaultBodyLimit::max(message_limit))
                .get(deliveries::messages),
        )
        .route("/v1/messages/{id}", get(messages::show))
        .route(
            "/v1/messages/{id}/attachments/{attachment_id}",
            get(attachments::download),
        )
        .route("/v1/messages/{id}/read", post(messages::mark_read))
        .route("/v1/staff", get(staff::list))
        .route(
            "/v1/campaigns",
            post(campaigns::create).get(campaigns::list),
        )
        .route("/v1/campaigns/{id}", get(campaigns::show))
        .route("/v1/campaigns/{id}/preview", post(campaigns::preview))
        .route("/v1/campaigns/{id}/pause", post(campaigns::pause))
        .route("/v1/campaigns/{id}/resume", post(campaigns::resume))
        .route("/v1/campaigns/{id}/cancel", post(campaigns::cancel))
        .route("/v1/campaigns/{id}/report", get(campaigns::report))
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
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/app-events", post(app_events::receive))
        .route(
            "/v1/webhook-endpoints/{id}",
            put(webhooks::put)
                .get(webhooks::show)
                .delete(webhooks::delete),
        )
        .route("/v1/webhook-endpoints/{id}/rotate", post(webhooks::rotate))
        .route(
            "/v1/webhook-endpoints/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
            post(webhooks::retry),
        )
        .route("/v1/deliveries", get(deliveries::list))
        .route("/v1/dead-letters", get(deliveries::dead_letters))
        .route("/v1/dead-letters/retry", post(deliveries::retry_all))
        .route(
            "/v1/dead-letters/{delivery_id}/retry",
            post(deliveries::retry),
        )
        .route("/v1/channels", get(channels::list))
        .route(
            "/v1/channels/{channel}/pause",
            post(channels::pause_channel),
        )
        .route(
            "/v1/channels/{channel}/resume",
            post(channels::resume_channel),
        )
        .route(
            "/v1/connectors/{name}/pause",
            post(channels::pause_connector),
        )
        .route(
            "/v1/connectors/{name}/resume",
            post(channels::resume_connector),
        )
        .route("/v1/hl7/messages", get(hl7::list))
        .route("/v1/hl7/messages/reprocess", post(hl7::reprocess_all))
        .route("/v1/hl7/messages/{id}", get(hl7::show))
        .route("/v1/hl7/messages/{id}/reprocess", post(hl7::reprocess))
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/direct/quarantine", get(inbound::direct_quarantine))
        .route(
            "/v1/direct/quarantine/{id}/release",
            post(inbound::release_quarantined),
        )
        .route("/v1/inbound/{id}", get(inbound::show))
        .route("/v1/inbound/{id}/resolve", post(inbound::resolve))
        .route("/v1/inbound/{id}/reassign", post(inbound::reassign))
        .route("/v1/inbound/{id}/dismiss", post(inbound::dismiss))
        .route("/hooks/{connector}/status", post(hooks::status))
        .route("/hooks/{connector}/voice", post(hooks::voice))
        .route(
            "/hooks/{connector}/inbound",
            // A fax provider posts the document itself (Phaxio): up to the fax limit, plus
            // room for its fields and the multipart framing.
            post(hooks::inbound).layer(DefaultBodyLimit::max(
                limit.max(
                    usize::try_from(state.config.fax_inbound.max_document_bytes)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1024 * 1024),
                ),
            )),
        )
        .route("/media/{token}", get(hooks::media))
        .merge(console::routes())
        .fallback(|| async { Problem::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            Problem::new(ProblemType::MethodNotAllowed, "method not allowed")
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
