//! Liveness (`/healthz`: the process answers), readiness (`/readyz`: the database answers) and
//! Prometheus metrics (`/metrics`: deliveries, dead letters, supervised task panics and
//! restarts, Direct MDNs sent, memory; behind a bearer token when `server.metrics_token` is set).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Serialize;
use tracing::instrument;

use super::AppState;
use super::problem::{Problem, ProblemType};

/// The body of `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok` (alive) or `ready` (the database answers).
    pub status: &'static str,
}

/// `GET /healthz`
#[instrument(skip_all)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: 503 `database_unavailable` when the database does not answer.
#[instrument(skip_all)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, Problem> {
    state.app.ops.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        Problem::new(ProblemType::DatabaseUnavailable, "database not reachable")
    })?;
    Ok(Json(Health { status: "ready" }))
}

/// `GET /metrics`: Prometheus text.
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
    let figures = state.app.ops.delivery_figures().await?;
    let mut text = String::from(
        "# HELP switchboard_deliveries Deliveries by channel and status.\n# TYPE switchboard_deliveries gauge\n",
    );
    for (channel, status, count) in figures.by_channel_and_status {
        text.push_str(&format!(
            "switchboard_deliveries{{channel=\"{channel}\",status=\"{status}\"}} {count}\n"
        ));
    }
    text.push_str("# HELP switchboard_dead_letters Deliveries that exhausted their attempts.\n# TYPE switchboard_dead_letters gauge\n");
    text.push_str(&format!(
        "switchboard_dead_letters {}\n",
        figures.dead_letters
    ));
    text.push_str(&state.tasks.render());
    {
        use crate::webhooks::dispatch::{DEAD, DELIVERED, FAILED_ATTEMPTS};
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str("# HELP switchboard_webhook_deliveries_total Webhook deliveries by outcome (this process): delivered (2xx), failed attempts, dead-lettered.\n# TYPE switchboard_webhook_deliveries_total counter\n");
        for (outcome, counter) in [
            ("delivered", &DELIVERED),
            ("failed_attempt", &FAILED_ATTEMPTS),
            ("dead", &DEAD),
        ] {
            text.push_str(&format!(
                "switchboard_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}\n",
                counter.load(Relaxed)
            ));
        }
    }
    {
        use crate::app_events::{LISTEN_ACCEPTED, LISTEN_MALFORMED, LISTEN_REFUSED};
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str("# HELP switchboard_app_listen_notifications_total App events received by LISTEN ([webhooks] app_listen) by outcome (this process): accepted, malformed (not an app event), refused.\n# TYPE switchboard_app_listen_notifications_total counter\n");
        for (outcome, counter) in [
            ("accepted", &LISTEN_ACCEPTED),
            ("malformed", &LISTEN_MALFORMED),
            ("refused", &LISTEN_REFUSED),
        ] {
            text.push_str(&format!(
                "switchboard_app_listen_notifications_total{{outcome=\"{outcome}\"}} {}\n",
                counter.load(Relaxed)
            ));
        }
    }
    {
        use crate::direct::mdn::{FAILED, RETRIED, SENT};
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str("# HELP switchboard_direct_mdns_total MDNs owed to senders of inbound Direct messages, by outcome (this process): sent (the HISP accepted it), retried (an attempt failed, another follows), failed (refused or given up).\n# TYPE switchboard_direct_mdns_total counter\n");
        for (outcome, counter) in [("sent", &SENT), ("retried", &RETRIED), ("failed", &FAILED)] {
            text.push_str(&format!(
                "switchboard_direct_mdns_total{{outcome=\"{outcome}\"}} {}\n",
                counter.load(Relaxed)
            ));
        }
    }
    text.push_str("# HELP switchboard_panics_total Panics caught and survived, by task.\n# TYPE switchboard_panics_total counter\n");
    text.push_str(&format!(
        "switchboard_panics_total{{task=\"http\"}} {}\n",
        super::HTTP_PANICS.load(std::sync::atomic::Ordering::Relaxed)
    ));
    if let Some(rss) = crate::process::rss_bytes() {
        text.push_str("# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\n");
        text.push_str(&format!("process_resident_memory_bytes {rss}\n"));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
