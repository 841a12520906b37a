//! `GET /v1/events/stream` (read scope): the events feed as Server-Sent Events. Each event's
//! `id:` is its feed cursor, so a reconnecting client's `Last-Event-ID` (or `?after=`)
//! resumes exactly where it was; `event:` is its kind, `data:` the envelope `GET /v1/events`
//! pages carry. `?types=a,b` keeps only those kinds. A comment is sent every
//! `webhooks.stream_keepalive_secs` while nothing happens.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tracing::instrument;

use super::AppState;
use super::auth::Org;
use super::json::ApiQuery;
use super::problem::{Problem, ProblemType};
use crate::events::Cursor;
use crate::service::FieldError;

/// `?after=&types=` of the stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Where to start (a cursor); `Last-Event-ID` wins when both are given.
    #[serde(default)]
    #[param(value_type = String)]
    after: Cursor,
    /// Comma-separated event kinds; absent: every kind.
    #[serde(default)]
    types: Option<String>,
}

/// `GET /v1/events/stream`
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    operation_id = "stream",
    summary = "The events feed as Server-Sent Events",
    params(
        StreamQuery
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`: `id:` the cursor, `event:` the kind, `data:` an event (the `Event` schema)", content_type = "text/event-stream", body = String)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn stream(
    State(state): State<AppState>,
    Org(org): Org,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let after = match headers.get("last-event-id") {
        None => query.after,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<Cursor>().ok())
            .ok_or_else(|| {
                Problem::new(ProblemType::InvalidHeader, "Last-Event-ID must be a cursor")
                    .with_errors(vec![FieldError::header(
                        "Last-Event-ID",
                        "must be an event's id from this stream (a feed cursor)",
                    )])
            })?,
    };
    let kinds: Vec<String> = query
        .types
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let events = state
        .app
        .events
        .follow(org, after, kinds)
        .filter_map(|view| async move {
            Event::default()
                .id(view.cursor.clone())
                .event(view.kind.clone())
                .json_data(&view)
                .ok()
                .map(Ok)
        });
    let keepalive = Duration::from_secs(state.config.webhooks.stream_keepalive_secs.max(1));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive)))
}
