//! Liveness (`/healthz`: the process answers), readiness (`/readyz`: the database answers) and
//! metrics (`/metrics`: OpenMetrics text of the in-memory state of `crate::metrics` and the
//! daemon's supervised tasks; behind a bearer token when `server.metrics_token` is set).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Serialize;
use tracing::instrument;

use super::AppState;
use super::problem::{Problem, ProblemType};

/// The body of `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready` (the database answers).
    pub status: &'static str,
}

/// `GET /healthz`
#[instrument(skip_all)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// How long `/readyz` waits for the database. While the database is down the pool keeps
/// trying to connect until its acquire timeout (30 s); a probe must hear "not ready" sooner.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// `GET /readyz`: 503 `database_unavailable` when the database does not answer within
/// [`READY_WITHIN`].
#[instrument(skip_all)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, Problem> {
    let unavailable = || Problem::new(ProblemType::DatabaseUnavailable, "database not reachable");
    match tokio::time::timeout(READY_WITHIN, state.app.ops.ready()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(unavailable())
        }
        Err(_) => {
            tracing::warn!(
                within_secs = READY_WITHIN.as_secs(),
                "readiness check failed: the database did not answer"
            );
            Err(unavailable())
        }
    }
}

/// `GET /metrics`: OpenMetrics text.
#[instrument(skip_all)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Problem> {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or_default();
        // Constant time: the comparison does not tell how much of a guess was right.
        let ok = given.len() == expected.len()
            && openssl::memcmp::eq(given.as_bytes(), expected.as_bytes());
        if !ok {
            return Err(Problem::new(
                ProblemType::Unauthorized,
                "the metrics bearer token (server.metrics_token) is required",
            ));
        }
    }
    // In-memory state only: a scrape never queries the database (`crate::metrics`).
    let text = crate::metrics::metrics()
        .render(vec![
            Box::new(state.tasks.clone()),
            Box::new(state.app.ops.gauges.clone()),
        ])
        .map_err(|_| Problem::internal())?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
