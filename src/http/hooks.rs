//! Provider webhooks: `POST /hooks/{connector}/status`, `POST /hooks/{connector}/inbound` and
//! `POST /hooks/{connector}/voice` (a call's script and the keys pressed, `crate::voice`).
//! No API key: each request must carry the provider's signature, checked against the URL the
//! provider called (`public_url` of the connector, else this request's Host and path). Forgeries
//! get 403 and an audit event. Status reports apply monotonically (late and duplicate ones are
//! recorded, never regress the delivery); unknown provider ids are logged and answered 2xx so
//! the provider stops retrying. Inbound messages are stored before they are answered.
//!
//! This edge owns the transport — the signature over the called URL, headers and body, and
//! reading the payload through the connector's manifest. What a report or a text then means
//! is the services': `deliveries` binds a status report to a delivery of *this* connector
//! (never rewriting its connector or provider id; replayed events are no-ops), `inbound`
//! binds a text to the organization owning the number it was sent to (or owning the
//! connector), else to the operator's orphan quarantine — never to a default organization.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tracing::{instrument, warn};

use super::problem::ProblemType;
use super::{AppState, Problem};
use crate::connectors::HttpConnector;
use crate::connectors::payload::Payload;
use crate::inbound::{Answering, InboundSms};
use crate::ops::RefusedWebhook;

fn connector(state: &AppState, name: &str) -> Result<Arc<HttpConnector>, Problem> {
    state
        .connectors
        .http(name)
        .ok_or_else(|| Problem::not_found(format!("no HTTP connector named {name}")))
}

/// The URL the provider called.
fn called_url(connector: &HttpConnector, headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(public) = connector.public_url() {
        return format!("{}{path}", public.trim_end_matches('/'));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}{path}")
}

fn unreadable(error: impl std::fmt::Display) -> Problem {
    Problem::new(ProblemType::InvalidWebhookPayload, error.to_string())
}

/// Reads the body as the manifest says it comes: form, JSON or `multipart/form-data` (its
/// boundary from the request's `Content-Type`).
fn payload(
    connector: &HttpConnector,
    kind: &'static str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Payload, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok());
    Payload::parse_typed(connector.webhook_encoding(kind), content_type, body).map_err(unreadable)
}

/// Verifies the signature; on failure records an audit event and answers 403.
async fn verified(
    state: &AppState,
    connector: &HttpConnector,
    kind: &'static str,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
) -> Result<Payload, Problem> {
    let payload = payload(connector, kind, headers, body)?;
    let url = called_url(connector, headers, uri);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    if let Err(e) = connector.verify(&url, &header, body, &payload) {
        let name = connector_name(connector);
        warn!(connector = %name, kind, reason = %e, "webhook refused");
        state
            .app
            .ops
            .webhook_refused(RefusedWebhook {
                connector_owner: connector.organization(),
                connector: name,
                channel: connector.manifest().channel.as_str(),
                kind,
                reason: e.to_string(),
            })
            .await;
        return Err(Problem::new(
            ProblemType::WebhookSignatureInvalid,
            "webhook signature missing or invalid",
        ));
    }
    Ok(payload)
}

/// Counts a webhook by connector (a configured one, else `unknown`), kind and result
/// (`accepted`, or the problem's code).
fn counted(
    state: &AppState,
    name: &str,
    kind: &'static str,
    result: Result<Response, Problem>,
) -> Result<Response, Problem> {
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(problem) => problem.kind().code(),
    };
    let connector = if state.connectors.http(name).is_some() {
        name
    } else {
        "unknown"
    };
    crate::metrics::metrics().provider_webhook(connector, kind, outcome);
    result
}

fn connector_name(connector: &HttpConnector) -> &str {
    crate::channels::Channel::name(connector)
}

/// `POST /hooks/{connector}/status`: 204 whatever became of the report (a report for no
/// delivery of this connector is ignored, so the provider stops retrying).
#[utoipa::path(
    post,
    path = "/hooks/{connector}/status",
    tag = "provider hooks",
    operation_id = "hook_status",
    summary = "A provider's delivery status report",
    description = "Called by an SMS, email or fax provider, never by API clients. No API key: \
        the request must carry the provider's own signature (its header and scheme are the \
        connector's, over the URL the provider called); a forgery is 403 and audited.",
    security(()),
    params(("connector" = String, Path, description = "The connector's name, as configured.")),
    request_body(description = "The provider's report, in its own format", content(
        (Object = "application/x-www-form-urlencoded"),
        (Object = "application/json")
    )),
    responses(
        (status = 204, description = "Recorded, or ignored (a report for no delivery of this connector)"),
        (status = 403, description = "The signature is missing or wrong", body = crate::http::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(connector = %name))]
pub async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, Problem> {
    let result = async {
        let connector = connector(&state, &name)?;
        let payload = verified(&state, &connector, "status", &headers, &uri, &body).await?;
        let report = connector.read_status(&payload).map_err(unreadable)?;
        let Some(report) = report else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let hint = query_param(&uri, "delivery");
        state.app.deliveries.report(&name, &report, hint).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    counted(&state, &name, "status", result)
}

/// `POST /hooks/{connector}/voice?delivery=<reference>[&step=gather-<n>]`: the script of a
/// call (the provider asks when the call is answered) or what follows the keys pressed, in the
/// connector's format (TwiML). Signed like every webhook; bound to a delivery of this
/// connector by the call id and the reference token, never by an id in the request.
#[utoipa::path(
    post,
    path = "/hooks/{connector}/voice",
    tag = "provider hooks",
    operation_id = "hook_voice",
    summary = "A call's script, or what follows the keys pressed",
    description = "Called by a voice provider (Twilio) when a call is answered and when the \
        person presses a key, never by API clients. No API key: the request must carry the \
        provider's signature over the URL it called; a forgery is 403 and audited. The answer \
        is the script in the provider's format (TwiML).",
    security(()),
    params(
        ("connector" = String, Path, description = "The connector's name, as configured."),
        ("delivery" = Option<String>, Query, description = "The call's delivery reference token (never an id)."),
        ("step" = Option<String>, Query, description = "`gather-<n>`: the keys pressed after the n-th prompt.")
    ),
    request_body(description = "The provider's call parameters, in its own format", content(
        (Object = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "The call's script", content_type = "text/xml"),
        (status = 403, description = "The signature is missing or wrong", body = crate::http::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(connector = %name))]
pub async fn voice(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, Problem> {
    let result = async {
        let connector = connector(&state, &name)?;
        let payload = verified(&state, &connector, "voice", &headers, &uri, &body).await?;
        let call = connector.read_call(&payload).map_err(unreadable)?;
        let reference = query_param(&uri, "delivery");
        let step = crate::voice::Step::parse(query_param(&uri, "step").as_deref());
        let script = state
            .app
            .voice
            .script(&name, &call, reference.clone(), step)
            .await?;
        let action = match (&script.gather, &reference) {
            (Some(step), Some(reference)) => Some(
                connector
                    .call_url(reference, Some(step))
                    .map_err(|e| unreadable(e.to_string()))?,
            ),
            _ => None,
        };
        let (content_type, body) = connector
            .call_script(&script.text, &script.language, action.as_deref())
            .map_err(unreadable)?;
        Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
    }
    .await;
    counted(&state, &name, "voice", result)
}

/// The first value of the query parameter `key` of the URL a provider called.
fn query_param(uri: &Uri, key: &str) -> Option<String> {
    uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    })
}

/// The body of an inbound webhook, read whole, and the share of the attachment memory budget
/// (`limits.attachment_memory_bytes`) it holds while it is handled: a fax posted with its
/// document (up to `fax_inbound.max_document_bytes`) is held about three times — the body,
/// the parsed file part, the sealed record — so many at once wait their turn instead of
/// exhausting memory. Bodies of an ordinary size hold none.
pub struct HookBody(Bytes, Option<tokio::sync::OwnedSemaphorePermit>);

/// A body up to this size holds no budget (an SMS, a Telnyx event).
const SMALL_HOOK_BODY: u64 = 256 * 1024;

impl FromRequest<AppState> for HookBody {
    type Rejection = Problem;

    async fn from_request(
        req: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let budget = crate::attachments::MemoryBudget::of_process(
            state.config.limits.attachment_memory_bytes,
        );
        let permit = match length {
            Some(n) if n <= SMALL_HOOK_BODY => None,
            Some(n) => budget.reserve(n.saturating_mul(3)).await,
            None => {
                let most = state.config.fax_inbound.max_document_bytes;
                budget.reserve(most.saturating_mul(3)).await
            }
        };
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(ProblemType::PayloadTooLarge, "request body too large")
            } else {
                Problem::new(ProblemType::InvalidWebhookPayload, e.body_text())
            }
        })?;
        Ok(HookBody(body, permit))
    }
}

/// `POST /hooks/{connector}/inbound`: recorded before it is answered; the answer (if the
/// provider takes one inline) is in the connector's format.
#[utoipa::path(
    post,
    path = "/hooks/{connector}/inbound",
    tag = "provider hooks",
    operation_id = "hook_inbound",
    summary = "A message or fax a provider received for us",
    description = "Called by an SMS or fax provider, never by API clients; signed like the \
        status reports. Stored before it is answered.",
    security(()),
    params(("connector" = String, Path, description = "The connector's name, as configured.")),
    request_body(description = "The provider's payload, in its own format (a fax provider may post the document itself)", content(
        (Object = "application/x-www-form-urlencoded"),
        (Object = "application/json"),
        (Object = "multipart/form-data")
    )),
    responses(
        (status = 200, description = "Recorded; the answer, if any, in the connector's format (such as TwiML)", content(
            (String = "text/xml"), (String = "application/xml"), (String = "text/plain")
        )),
        (status = 204, description = "Recorded; nothing to answer"),
        (status = 403, description = "The signature is missing or wrong", body = crate::http::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such connector", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all, fields(connector = %name))]
pub async fn inbound(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    HookBody(body, _held): HookBody,
) -> Result<Response, Problem> {
    let result = async {
        let connector = connector(&state, &name)?;
        let payload = verified(&state, &connector, "inbound", &headers, &uri, &body).await?;
        if connector.is_fax() {
            return fax(&state, &connector, &payload).await;
        }
        let Some(message) = connector.read_inbound(&payload).map_err(unreadable)? else {
            return Ok(answer(&connector, None));
        };
        let sms = InboundSms {
            connector: name.clone(),
            provider_ref: message.provider_ref,
            from: message.from,
            to: message.to,
            body: message.body,
            media: message.media,
        };
        let answering = if connector.replies_inline() {
            Answering::Inline
        } else {
            Answering::Message
        };
        let reply = state
            .app
            .inbound
            .receive_from_provider(&sms, connector.organization(), answering)
            .await?;
        Ok(answer(&connector, reply.as_deref()))
    }
    .await;
    counted(&state, &name, "inbound", result)
}

/// A received fax: recorded sealed (once per provider fax id) before the provider is
/// answered 200; the `fax-inbound` job downloads, routes and files it.
async fn fax(
    state: &AppState,
    connector: &HttpConnector,
    payload: &Payload,
) -> Result<Response, Problem> {
    let Some(event) = connector.read_fax(payload).map_err(unreadable)? else {
        return Ok(StatusCode::OK.into_response());
    };
    let Some(service) = &state.fax_inbound else {
        warn!("a fax webhook arrived, but this process does not take received faxes");
        return Err(Problem::internal());
    };
    let document = event.document_part.as_deref().and_then(|part| {
        payload
            .files()
            .iter()
            .rev()
            .find(|f| f.name == part)
            .map(|f| (f.content_type.clone(), f.data.as_ref()))
    });
    let receipt = service
        .record(connector, &event, document)
        .await
        .map_err(|e| {
            warn!(error = %e, "received fax not recorded");
            Problem::internal()
        })?;
    tracing::info!(fax_id = %receipt.id, fresh = receipt.fresh, "received fax recorded");
    Ok(StatusCode::OK.into_response())
}

fn answer(connector: &HttpConnector, reply: Option<&str>) -> Response {
    match connector.inbound_answer(reply) {
        Some((content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `GET /media/{token}`: a fax document we serve to the provider that sends it (Telnyx
/// `media_url`). No API key: the random token in the URL is the capability; it works once and
/// expires in minutes. Unknown, used and expired tokens get the same 404.
#[utoipa::path(
    get,
    path = "/media/{token}",
    tag = "provider hooks",
    operation_id = "hook_media",
    summary = "A fax document, for the provider that sends it",
    description = "No API key: the random token is the capability; it works once and expires in minutes.",
    security(()),
    params(("token" = String, Path, description = "The token of the document's link.")),
    responses(
        (status = 200, description = "The document", content(([u8] = "application/pdf"), ([u8] = "image/tiff"), ([u8] = "application/octet-stream"))),
        (status = 404, description = "No such document, or its link was used or expired", body = crate::http::Problem, content_type = "application/problem+json")
    )
)]
#[instrument(skip_all)]
pub async fn media(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, Problem> {
    match state
        .app
        .fax
        .take(&token)
        .await
        .map_err(crate::service::ServiceError::from)?
    {
        Some(media) => Ok((
            [
                (header::CONTENT_TYPE, media.content_type),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            media.data,
        )
            .into_response()),
        None => Err(Problem::not_found(
            "no such document, or its link was used or expired",
        )),
    }
}
