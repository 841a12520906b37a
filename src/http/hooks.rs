//! Provider webhooks: `POST /hooks/{connector}/status` and `POST /hooks/{connector}/inbound`.
//! No API key: each request must carry the provider's signature, checked against the URL the
//! provider called (`public_url` of the connector, else this request's Host and path). Forgeries
//! get 403 and an audit event. Status reports apply monotonically (late and duplicate ones are
//! recorded, never regress the delivery); unknown provider ids are logged and answered 2xx so
//! the provider stops retrying. Inbound messages are stored before they are answered.
//!
//! Trust binding: a status report applies only to a delivery carried by *this* connector
//! (matched by the provider's id first; the `?delivery=` hint is a keyed reference token that
//! must name a delivery of this connector and agree with the provider id when both are known),
//! and never rewrites the delivery's connector or provider id. Events the provider numbers
//! (Telnyx) are recorded, so a replay is a no-op. An inbound item goes to the organization
//! owning the number it was sent to (or owning the connector), else to the operator's orphan
//! quarantine — never to a default organization.

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
use crate::store::{AuditEntry, DeliveryRow, StoreError};
use crate::tenancy::Route;

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

/// The organization that owns the connector outright, if one does and exists.
async fn connector_organization(
    state: &AppState,
    connector: &HttpConnector,
) -> Result<Option<String>, Problem> {
    let Some(slug) = connector.organization() else {
        return Ok(None);
    };
    match state.store.organization_by_slug(slug).await {
        Ok(org) => Ok(Some(org.id)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
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
        if let Ok(Some(org)) = connector_organization(state, connector).await {
            let _ = state
                .store
                .record_audit(&AuditEntry {
                    organization_id: org,
                    action: "webhook_refused".into(),
                    actor: format!("webhook:{}", connector_name(connector)),
                    channel: Some(connector.manifest().channel.to_string()),
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
    if let Some(event) = &report.event_id
        && !state.store.record_webhook_event(&name, event).await?
    {
        info!(connector = %name, "status webhook event seen before; ignored");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let hint = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "delivery")
            .map(|(_, v)| v.into_owned())
    });
    let Some(delivery) = delivery_for_report(&state, &name, &report.provider_ref, hint).await?
    else {
        info!(connector = %name, "status callback for no delivery of this connector; ignored");
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let Some(mut update) = report_update(&report, &name, &format!("webhook:{name}")) else {
        info!(connector = %name, delivery_id = %delivery.id, "provider state not mapped; ignored");
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // A webhook never rewrites which connector carried the delivery, nor the provider's id.
    update.connector = None;
    update.provider_ref = None;
    if delivery.connector.is_some() {
        update.expect_connector = Some(name.clone());
    }
    let moved = state.store.update_delivery(&delivery.id, &update).await?;
    info!(connector = %name, delivery_id = %delivery.id, status = update.status.as_str(), moved, "status callback");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The delivery a status report from connector `name` is about: the delivery this connector
/// knows by the provider's id; else the one the `?delivery=` reference token names, when it
/// is carried by this connector (or, before our own `sent` record, is being sent on a channel
/// this connector carries) and its provider id, if known, is the report's. Anything else is
/// no delivery of this connector's.
async fn delivery_for_report(
    state: &AppState,
    name: &str,
    provider_ref: &str,
    hint: Option<String>,
) -> Result<Option<DeliveryRow>, Problem> {
    if let Some(id) = state
        .store
        .delivery_by_provider_ref(name, provider_ref)
        .await?
    {
        let delivery = state.store.delivery(&id).await?;
        if let Some(token) = &hint
            && !state
                .messages
                .keyring
                .delivery_ids_for_token(token)
                .contains(&delivery.id)
        {
            warn!(connector = %name, delivery_id = %delivery.id, "status callback's reference names another delivery than its provider id; ignored");
            return Ok(None);
        }
        return Ok(Some(delivery));
    }
    let Some(token) = hint else {
        return Ok(None);
    };
    for id in state.messages.keyring.delivery_ids_for_token(&token) {
        let delivery = match state.store.delivery(&id).await {
            Ok(delivery) => delivery,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let carried_here = match &delivery.connector {
            Some(connector) => connector == name,
            None => state.config.channel(&delivery.channel).connector == name,
        };
        let same_ref = delivery
            .provider_ref
            .as_deref()
            .is_none_or(|r| r == provider_ref);
        if carried_here && same_ref {
            return Ok(Some(delivery));
        }
        warn!(connector = %name, delivery_id = %delivery.id, "status callback's reference names a delivery of another connector or provider id; ignored");
    }
    Ok(None)
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
    let sms = InboundSms {
        connector: name.clone(),
        provider_ref: message.provider_ref,
        from: message.from,
        to: message.to,
        body: message.body,
        media: message.media,
    };
    let organization_id = match state
        .tenancy
        .route_number(&sms.to, connector.organization())
    {
        Route::Organization(slug) => match state.store.organization_by_slug(&slug).await {
            Ok(org) => org.id,
            Err(StoreError::NotFound) => {
                let reason = format!("organization {slug} is not set up");
                state.inbound.receive_orphan(&sms, &reason).await?;
                return Ok(answer(&connector, None));
            }
            Err(e) => return Err(e.into()),
        },
        Route::Orphan(reason) => {
            state.inbound.receive_orphan(&sms, &reason).await?;
            return Ok(answer(&connector, None));
        }
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
