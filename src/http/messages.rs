//! `/v1/messages`, `/v1/messages/{id}/read`, `/v1/threads/{id}/messages` and `/v1/events`.
//! Wire types: `crate::messages` (`SendRequest`, `MessageView`, `ThreadMessages`) and
//! `crate::events` (`EventsPage`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::{Span, field, instrument};

use super::AppState;
use super::attachments::{MessageBody, MultipartSend};
use super::auth::Org;
use super::json::ApiQuery;
use super::problem::{Problem, ProblemType};
use crate::events::{Cursor, EventsPage};
use crate::messages::{MessageView, SendRequest, ThreadMessages};
use crate::service::FieldError;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /v1/messages` (JSON or multipart, see `attachments`): 201 with the message record, or 200 (`Idempotent-Replayed: true`)
/// with the record an earlier request with the same `Idempotency-Key` created.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "messages",
    operation_id = "messages_create",
    summary = "Send a message",
    request_body(content(
        (SendRequest = "application/json"),
        (MultipartSend = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "The message was accepted", body = MessageView),
        (status = 200, description = "Replayed: an earlier request with this Idempotency-Key created it (`Idempotent-Replayed: true`)", body = MessageView),
        (status = 404, description = "`thread_id` names no thread of the organization", body = crate::http::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was used with a different request", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, message_id = field::Empty))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    headers: HeaderMap,
    MessageBody(request, _budget): MessageBody,
) -> Result<Response, Problem> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => Some(value.to_str().map_err(|_| {
            Problem::new(
                ProblemType::InvalidHeader,
                "Idempotency-Key must be visible ASCII",
            )
            .with_errors(vec![FieldError::header(
                "Idempotency-Key",
                "must be visible ASCII",
            )])
        })?),
        None => None,
    };
    let messages = &state.app.messages;
    let accepted = messages.accept_from_client(&org, request, key).await?;
    let replayed = accepted.replayed;
    let view = messages.accepted_view(&org, accepted).await?;
    Span::current().record("message_id", field::display(&view.id));
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(view)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /v1/messages/{id}`
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "messages",
    operation_id = "messages_show",
    summary = "A message with its deliveries",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 200, description = "The message", body = MessageView)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, message_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, Problem> {
    Ok(Json(state.app.messages.view(&org, &id).await?))
}

/// `POST /v1/messages/{id}/read`: 204.
#[utoipa::path(
    post,
    path = "/v1/messages/{id}/read",
    tag = "messages",
    operation_id = "mark_read",
    summary = "Mark a message read",
    params(
        ("id" = String, Path, description = "The record's id (a ULID).")
    ),
    responses(
        (status = 204, description = "Marked read")
    )
)]
#[instrument(skip_all, fields(organization_id = %org, message_id = %id))]
pub async fn mark_read(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.app.messages.mark_read(&org, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?limit=` of `GET /v1/threads/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadQuery {
    /// 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// `GET /v1/threads/{id}/messages`
#[utoipa::path(
    get,
    path = "/v1/threads/{id}/messages",
    tag = "messages",
    operation_id = "thread_messages",
    summary = "A thread's messages",
    params(
        ("id" = String, Path, description = "The record's id (a ULID)."),
        ThreadQuery
    ),
    responses(
        (status = 200, description = "The thread and its messages", body = ThreadMessages)
    )
)]
#[instrument(skip_all, fields(organization_id = %org, thread_id = %id))]
pub async fn thread_messages(
    State(state): State<AppState>,
    Org(org): Org,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ThreadQuery>,
) -> Result<Json<ThreadMessages>, Problem> {
    Ok(Json(
        state.app.messages.thread(&org, &id, query.limit).await?,
    ))
}

/// `?after=&limit=` of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The `next_after` of the previous page (`"<tx>.<id>"`), or a bare event id.
    #[serde(default)]
    #[param(value_type = String)]
    after: Cursor,
    /// 1 to 1000 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: i64,
}

/// `GET /v1/events`: the events feed in commit order.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "events",
    summary = "The events feed, in commit order",
    params(
        EventsQuery
    ),
    responses(
        (status = 200, description = "A page of events", body = EventsPage)
    )
)]
#[instrument(skip_all, fields(organization_id = %org))]
pub async fn events(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, Problem> {
    Ok(Json(
        state
            .app
            .events
            .page(&org, query.after, query.limit)
            .await?,
    ))
}
