//! The HTTP surface (axum): API v1 under `/v1` (bearer API keys, one organization each),
//! health probes and metrics. Errors are `application/problem+json` (RFC 9457) and never leak
//! internals; request bodies are size-limited.

mod appointments;
mod auth;
mod health;
mod json;
mod messages;
mod patients;
mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::messages::MessageService;
use crate::store::Store;

pub use auth::{hash_token, new_token};
pub use problem::Problem;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub messages: MessageService,
    pub config: Arc<Config>,
    pub keys: auth::KeyCache,
}

impl AppState {
    pub fn new(messages: MessageService, config: Arc<Config>) -> Self {
        Self {
            store: messages.store.clone(),
            messages,
            config,
            keys: auth::KeyCache::default(),
        }
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
