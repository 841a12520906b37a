//! `/v1/messages`, `/v1/threads/{id}/messages` and `/v1/events`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use tracing::instrument;

use super::AppState;
use super::auth::Org;
use super::json::ApiJson;
use super::problem::Problem;
use crate::messages::{MessageView, SendRequest, rfc3339};
use crate::store::{EventCursor, StoreError};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[instrument(skip_all, fields(organization_id = %org))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<impl IntoResponse, Problem> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?,
        ),
        None => None,
    };
    // Purposes that relax the PHI rule are the daemon's own; a client's must be on the list.
    crate::disclosure::client_purpose(&request.metadata).map_err(|e| {
        Problem::invalid_field("/metadata/purpose", format!("metadata.purpose: {e}"))
    })?;
    let accepted = state.messages.accept(&org, &request, key).await?;
    let view = match accepted.view {
        Some(view) => view,
        None => state.messages.view(&org, &accepted.message_id).await?,
    };
    let status = if accepted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(view)).into_response();
    if accepted.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, Problem> {
    Ok(Json(state.messages.view(&org, &id).await?))
}

#[derive(Deserialize)]
pub struct Page {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

pub async fn thread_messages(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse, Problem> {
    let thread = match state.store.thread(&org, &id).await {
        Err(StoreError::NotFound) => return Err(Problem::not_found("thread not found")),
        other => other?,
    };
    let limit = page.limit.clamp(1, 500);
    let rows = state.store.thread_messages(&org, &thread.id, limit).await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        messages.push(state.messages.view(&org, &row.id).await?);
    }
    Ok(Json(serde_json::json!({
        "thread": {
            "id": thread.id, "patient_id": thread.patient_id, "category": thread.category,
            "status": thread.status, "created_at": rfc3339(thread.created_at),
        },
        "messages": messages,
    })))
}

/// The events outbox, from a cursor: `GET /v1/events?after=<id>&limit=<n>`.
/// How long a page of events waits for older transactions: 100 × 20 ms.
const HELD_BACK_RETRIES: usize = 100;
const HELD_BACK_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// `?after=` takes the `next_after` of the previous page (`"<tx>.<id>"`) or a bare event id.
#[derive(Deserialize)]
pub struct EventsPage {
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    after: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    Org(org): Org,
    Query(page): Query<EventsPage>,
) -> Result<impl IntoResponse, Problem> {
    let limit = page.limit.clamp(1, 1000);
    let cursor = match page.after.as_deref() {
        None | Some("") => EventCursor::default(),
        Some(text) => EventCursor::parse(text).ok_or_else(|| {
            Problem::bad_request("`after` must be a cursor from `next_after` or an event id")
        })?,
    };
    // Events committed behind a transaction still open are held back (handing them out
    // would let a follower step over the open one); such transactions last milliseconds, so
    // the page waits a little for them rather than return short.
    let mut page = state.store.events_after(&org, cursor, limit).await?;
    for _ in 0..HELD_BACK_RETRIES {
        if !page.held_back {
            break;
        }
        tokio::time::sleep(HELD_BACK_PAUSE).await;
        page = state.store.events_after(&org, cursor, limit).await?;
    }
    let rows = page.events;
    let next = rows.last().map_or(cursor, EventCursor::after);
    let events: Vec<_> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "kind": r.kind, "subject_id": r.subject_id,
                "payload": serde_json::from_str::<serde_json::Value>(&r.payload).unwrap_or_default(),
                "at": rfc3339(r.created_at),
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "events": events, "next_after": next.to_string() }),
    ))
}
