//! Provider webhooks: `POST /hooks/{connector}/status` and `POST /hooks/{connector}/inbound`.
//! No API key: each request must carry the provider's signature, checked against the URL the
//! provider called (`public_url` of the connector, else this request's Host and path). Forgeries
//! get 403 and an audit event. Status reports apply monotonically (late and duplicate ones are
//! recorded, never regress the delivery); unknown provider ids are logged and answered 200 so
//! the provider stops retrying. Inbound messages are stored before they are answered.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::{AppState, Problem};
use crate::connectors::HttpConnector;
use crate::connectors::payload::Payload;
use crate::inbound::InboundSms;
use crate::queue::reconcile::report_update;
use crate::store::{AuditEntry, StoreError};

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

async fn organization_for(state: &AppState, connector: &HttpConnector) -> Result<String, Problem> {
    match connector.organization() {
        Some(slug) => Ok(state.store.organization_by_slug(slug).await?.id),
        None => Ok(state.store.first_organization_id().await?),
    }
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
    let payload = Payload::parse(connector.webhook_encoding(kind), body)
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let url = called_url(connector, headers, uri);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    if let Err(e) = connector.verify(&url, &header, body, &payload) {
        warn!(connector = %connector_name(connector), kind, reason = %e, "webhook refused");
        if let Ok(org) = organization_for(state, connector).await {
            let _ = state
                .store
                .record_audit(&AuditEntry {
                    organization_id: org,
                    action: "webhook_refused".into(),
                    actor: format!("webhook:{}", connector_name(connector)),
                    channel: Some(connector.manifest().channel.clone()),
                    outcome: Some("forbidden".into()),
                    detail: Some(format!("{kind}: {e}")),
                    ..Default::default()
                })
                .await;
        }
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "webhook signature missing or invalid",
        ));
    }
    Ok(payload)
}

fn connector_name(connector: &HttpConnector) -> &str {
    crate::channels::Channel::name(connector)
}

/// `POST /hooks/{connector}/status`
pub async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, Problem> {
    let connector = connector(&state, &name)?;
    verified(&state, &connector, "status", &headers, &uri, &body).await?;
    let (_, report) = connector
        .read_status(&body)
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let Some(report) = report else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // The delivery id travels in the callback URL; the provider id is the fallback.
    let by_url = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "delivery")
            .map(|(_, v)| v.into_owned())
    });
    let delivery = match by_url {
        Some(id) => match state.store.delivery(&id).await {
            Ok(d)
                if d.provider_ref
                    .as_deref()
                    .is_none_or(|r| r == report.provider_ref) =>
            {
                Some(d)
            }
            Ok(_) => None,
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => match state
            .store
            .delivery_by_provider_ref(&name, &report.provider_ref)
            .await?
        {
            Some(id) => Some(state.store.delivery(&id).await?),
            None => None,
        },
    };
    let Some(delivery) = delivery else {
        info!(connector = %name, "status callback for an unknown message; ignored");
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let Some(update) = report_update(&report, &name, &format!("webhook:{name}")) else {
        info!(connector = %name, delivery_id = %delivery.id, "provider state not mapped; ignored");
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let moved = state.store.update_delivery(&delivery.id, &update).await?;
    info!(connector = %name, delivery_id = %delivery.id, status = update.status.as_str(), moved, "status callback");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /hooks/{connector}/inbound`
pub async fn inbound(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, Problem> {
    let connector = connector(&state, &name)?;
    let payload = verified(&state, &connector, "inbound", &headers, &uri, &body).await?;
    let Some(message) = connector
        .read_inbound(&payload)
        .map_err(|e| Problem::bad_request(e.to_string()))?
    else {
        return Ok(answer(&connector, None));
    };
    let organization_id = organization_for(&state, &connector).await?;
    let sms = InboundSms {
        connector: name.clone(),
        provider_ref: message.provider_ref,
        from: message.from,
        to: message.to,
        body: message.body,
        media: message.media,
    };
    let receipt = state.inbound.receive_sms(&organization_id, &sms).await?;
    // Only an answer the disclosure gate permitted is here at all.
    let reply = receipt.reply.as_ref();
    if let Some(reply) = reply {
        if connector.replies_inline() {
            // Answered in this response: the disclosure happens now.
            let actor = format!("webhook:{name}");
            state
                .store
                .record_audit(&reply.permit.audit(&actor, "answered", None, None, None))
                .await?;
        } else if receipt.outcome != "opted_out" {
            // Providers without inline replies answer STOP themselves (carrier rules); other
            // replies go out as a message (the worker passes the gate again).
            state
                .send_reply(&organization_id, &sms.from, reply)
                .await
                .map_err(Problem::from)?;
        }
    }
    Ok(answer(&connector, reply.map(|r| r.text.as_str())))
}

fn answer(connector: &HttpConnector, reply: Option<&str>) -> Response {
    match connector.inbound_answer(reply) {
        Some((content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}
