//! The OpenAPI 3.1 document of `/v1` and of the webhooks we send, generated from the code
//! (utoipa): each handler's `#[utoipa::path]` and the wire types' `ToSchema`. What is one rule
//! elsewhere is read from there rather than restated: each operation's security is
//! [`required_scope`] (the one permission table), its error responses are the
//! [`ProblemType`]s of their status, and the webhooks' event schemas are the contracts in
//! `docs/events/`. Served at `GET /v1/openapi.json` (no key needed); `docs/openapi.json` is a
//! copy that `tests/openapi.rs` keeps equal to it (`switchboard openapi > docs/openapi.json`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{Method, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, SecurityRequirement};
use utoipa::openapi::security::{Http, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};

use super::auth::required_scope;
use super::problem::{Problem, ProblemType};
use super::{
    app_events, appointments, attachments, campaigns, channels, deliveries, events, hl7, hooks,
    inbound, messages, patients, reminders, staff, webhooks,
};
use crate::webhooks::dispatch::WebhookBody;

/// The security scheme of API keys (`Authorization: Bearer sbk_…`).
const API_KEY: &str = "api_key";
/// A Standard Webhooks signature: the webhooks we send, and `POST /v1/app-events` without a key.
const SIGNATURE: &str = "webhook_signature";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard API",
        description = "The HTTP API v1 of Switchboard, a healthcare interoperability gateway \
            (README \"HTTP API v1\"). Every `/v1` route but this document needs a bearer API \
            key of the organization, with the scope each operation names (`send`, `read`, \
            `admin`); records of other organizations answer 404. Errors are \
            `application/problem+json` (RFC 9457) with a stable `type` and `code`. The \
            `webhooks` are the events POSTed to a webhook endpoint, signed (Standard Webhooks); \
            `/hooks` and `/media` are what providers call."
    ),
    paths(
        serve,
        messages::create,
        messages::show,
        messages::mark_read,
        messages::thread_messages,
        messages::events,
        attachments::download,
        deliveries::messages,
        deliveries::list,
        deliveries::dead_letters,
        deliveries::retry,
        deliveries::retry_all,
        staff::upsert,
        staff::list,
        campaigns::create,
        campaigns::list,
        campaigns::show,
        campaigns::preview,
        campaigns::pause,
        campaigns::resume,
        campaigns::cancel,
        campaigns::report,
        reminders::rules,
        reminders::put_rule,
        reminders::plan,
        patients::upsert,
        patients::show,
        appointments::of_patient,
        appointments::upsert,
        appointments::show,
        appointments::upsert_recall,
        appointments::show_recall,
        events::stream,
        app_events::receive,
        webhooks::put,
        webhooks::show,
        webhooks::delete,
        webhooks::rotate,
        webhooks::deliveries,
        webhooks::retry,
        channels::list,
        channels::pause_channel,
        channels::resume_channel,
        channels::pause_connector,
        channels::resume_connector,
        hl7::list,
        hl7::show,
        hl7::reprocess,
        hl7::reprocess_all,
        inbound::list,
        inbound::direct_quarantine,
        inbound::release_quarantined,
        inbound::show,
        inbound::resolve,
        inbound::reassign,
        inbound::dismiss,
        hooks::status,
        hooks::inbound,
        hooks::media,
    ),
    components(schemas(Problem, WebhookBody, crate::inbound::InboundStatus)),
    tags(
        (name = "messages", description = "Send messages; read them, their threads and attachments"),
        (name = "patients", description = "Patients, their contact points and consents"),
        (name = "appointments", description = "Appointments and recalls"),
        (name = "reminders", description = "Reminder rules and plans"),
        (name = "campaigns", description = "Recall campaigns and bulk notices"),
        (name = "staff", description = "The staff directory for urgent notifications"),
        (name = "events", description = "The events feed, its live stream, and the messaging app's events"),
        (name = "webhooks", description = "Webhook endpoints and their deliveries"),
        (name = "inbound", description = "The inbound work queue"),
        (name = "hl7", description = "The HL7 v2 archive"),
        (name = "operations", description = "Operators' lists, dead letters, pauses"),
        (name = "provider hooks", description = "What SMS, email and fax providers call (signed by them, no API key)"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// `GET /v1/openapi.json`: this document (no API key needed).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json_text())
}

/// The document as served and checked in (pretty JSON, a final newline).
pub fn json_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text =
            serde_json::to_string_pretty(&document()).unwrap_or_else(|_| String::from("{}"));
        text.push('\n');
        text
    })
}

/// The document.
pub fn document() -> Value {
    let mut api = ApiDoc::openapi();
    let mut referenced = std::collections::BTreeSet::new();
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, operation) in [
            (Method::GET, item.get.as_mut()),
            (Method::PUT, item.put.as_mut()),
            (Method::POST, item.post.as_mut()),
            (Method::DELETE, item.delete.as_mut()),
        ] {
            if let Some(operation) = operation {
                referenced.extend(complete(path, &method, operation));
            }
        }
    }
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::Http({
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = Some("sbk_<64 hex>".into());
            http.description = Some(
                "An API key (`switchboard keys create`). Its scopes (`send`, `read`, `admin`, \
                 independent of each other) are listed per operation."
                    .into(),
            );
            http
        }),
    );
    components.add_security_scheme(
        SIGNATURE,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "webhook-signature",
            "A Standard Webhooks signature, with `webhook-id` and `webhook-timestamp`: \
             `v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">`. The webhooks we send are \
             signed with the endpoint's secret; `POST /v1/app-events` without an API key \
             must be, with one of `[webhooks] app_secrets` (which names the organization).",
        ))),
    );
    for (status, kinds) in problem_statuses()
        .into_iter()
        .filter(|(status, _)| referenced.contains(status))
    {
        components
            .responses
            .insert(response_name(status), RefOr::T(problem_response(&kinds)));
    }
    let mut document = serde_json::to_value(&api).unwrap_or(Value::Null);
    add_webhooks(&mut document);
    document
}

/// Security from [`required_scope`], and the problem responses an operation may answer (their
/// statuses returned).
fn complete(path: &str, method: &Method, operation: &mut Operation) -> Vec<u16> {
    let public = operation.security.as_ref().is_some_and(|s| {
        s.iter()
            .all(|r| serde_json::to_value(r).is_ok_and(|v| v == json!({})))
    });
    if !public {
        let scope = required_scope(method, path);
        let mut requirements = vec![SecurityRequirement::new(API_KEY, [scope.as_str()])];
        if path == "/v1/app-events" {
            requirements.push(SecurityRequirement::new(SIGNATURE, Vec::<String>::new()));
        }
        operation.security = Some(requirements);
    }
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| {
        parameters.iter().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let (in_path, in_query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    let body = operation.request_body.is_some();
    let mut statuses: Vec<u16> = vec![500, 503];
    if !public {
        statuses.extend([401, 403]);
    }
    if in_path {
        // An unknown record, or a path parameter that cannot name one.
        statuses.extend([404, 422]);
    }
    if in_query || body {
        statuses.extend([400, 422]);
    }
    statuses.sort_unstable();
    statuses.dedup();
    if body {
        statuses.extend([408, 413, 415]);
    }
    let responses = &mut operation.responses.responses;
    for &status in &statuses {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(response_name(status))));
    }
    statuses
}

fn response_name(status: u16) -> String {
    format!("Problem{status}")
}

/// The problem types by status.
fn problem_statuses() -> BTreeMap<u16, Vec<ProblemType>> {
    let mut by_status: BTreeMap<u16, Vec<ProblemType>> = BTreeMap::new();
    for kind in ProblemType::ALL {
        by_status
            .entry(kind.status().as_u16())
            .or_default()
            .push(kind);
    }
    by_status
}

fn problem_response(kinds: &[ProblemType]) -> Response {
    let list = kinds
        .iter()
        .map(|k| format!("`{}` ({})", k.code(), k.title()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = Response::new(format!("Problem details; `code` is one of: {list}."));
    response.content.insert(
        "application/problem+json".into(),
        RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
    );
    response
}

/// Each event kind's contract (`docs/events/`), as the `data` of its webhook.
const EVENT_SCHEMAS: [(&str, u32, &str); 13] = [
    (
        "message.accepted",
        1,
        include_str!("../../docs/events/message.accepted.v1.json"),
    ),
    (
        "urgent_message_sent",
        1,
        include_str!("../../docs/events/urgent_message_sent.v1.json"),
    ),
    (
        "delivery.status",
        1,
        include_str!("../../docs/events/delivery.status.v1.json"),
    ),
    (
        "message.read",
        1,
        include_str!("../../docs/events/message.read.v1.json"),
    ),
    (
        "appointment.changed",
        1,
        include_str!("../../docs/events/appointment.changed.v1.json"),
    ),
    (
        "appointment.confirmed",
        1,
        include_str!("../../docs/events/appointment.confirmed.v1.json"),
    ),
    (
        "appointment.cancel_requested",
        1,
        include_str!("../../docs/events/appointment.cancel_requested.v1.json"),
    ),
    (
        "appointment.reschedule_requested",
        1,
        include_str!("../../docs/events/appointment.reschedule_requested.v1.json"),
    ),
    (
        "reminder.reply",
        1,
        include_str!("../../docs/events/reminder.reply.v1.json"),
    ),
    (
        "inbound.unmatched",
        1,
        include_str!("../../docs/events/inbound.unmatched.v1.json"),
    ),
    (
        "inbound.filed",
        1,
        include_str!("../../docs/events/inbound.filed.v1.json"),
    ),
    (
        "inbound.reassigned",
        1,
        include_str!("../../docs/events/inbound.reassigned.v1.json"),
    ),
    (
        "inbound.dismissed",
        1,
        include_str!("../../docs/events/inbound.dismissed.v1.json"),
    ),
];

/// The `webhooks` section: one POST per event kind, its body `WebhookBody` with `data` that
/// kind's contract; and each contract as a schema (`Event.<kind>.v<version>`).
fn add_webhooks(document: &mut Value) {
    let mut webhooks = serde_json::Map::new();
    for (kind, version, text) in EVENT_SCHEMAS {
        let Ok(Value::Object(mut schema)) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        // Identifiers of the standalone files; the document names the schema itself.
        schema.remove("$schema");
        schema.remove("$id");
        let name = format!("Event.{kind}.v{version}");
        if let Some(schemas) = document
            .pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut)
        {
            schemas.insert(name.clone(), Value::Object(schema));
        }
        let header = |name: &str, description: &str| {
            json!({"name": name, "in": "header", "required": true,
                   "description": description, "schema": {"type": "string"}})
        };
        webhooks.insert(
            kind.to_string(),
            json!({"post": {
                "operationId": format!("webhook_{}", kind.replace('.', "_")),
                "summary": format!("The `{kind}` event (event_version {version})"),
                "description": "POSTed to each webhook endpoint whose `event_types` include the \
                    kind (or are empty). Answer 2xx once stored: anything else, or no answer \
                    within the timeout, is retried with backoff, then dead-lettered. \
                    At least once: deduplicate by `webhook-id`.",
                "tags": ["webhooks"],
                "security": [{SIGNATURE: []}],
                "parameters": [
                    header("webhook-id", "Stable per event and endpoint: deduplicate by it."),
                    header("webhook-timestamp", "Unix seconds of this attempt."),
                    header("webhook-signature",
                        "`v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">` with the endpoint's secret (space-separated during a rotation)."),
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/WebhookBody"},
                        {"type": "object", "properties": {
                            "type": {"const": kind},
                            "data": {"$ref": format!("#/components/schemas/{name}")},
                        }},
                    ]
                }}}},
                "responses": {"2XX": {"description": "Delivered."}},
            }}),
        );
    }
    if let Some(object) = document.as_object_mut() {
        object.insert("webhooks".into(), Value::Object(webhooks));
        object.insert(
            "servers".into(),
            json!([{"url": "/", "description": "The daemon (`server.listen`)"}]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_event_kind_has_a_webhook() {
        let mut kinds: Vec<(&str, u32)> = EVENT_SCHEMAS.iter().map(|(k, v, _)| (*k, *v)).collect();
        let mut catalogue = crate::events::CATALOGUE.to_vec();
        kinds.sort_unstable();
        catalogue.sort_unstable();
        assert_eq!(kinds, catalogue);
    }

    /// Every `/v1`, `/hooks` and `/media` route of the router is documented, and nothing else
    /// is.
    #[test]
    fn every_v1_route_is_documented() {
        let router = include_str!("mod.rs");
        let mut routed: Vec<&str> = ["\"/v1/", "\"/hooks/", "\"/media/"]
            .iter()
            .flat_map(|prefix| router.match_indices(prefix))
            .filter_map(|(at, _)| router[at + 1..].split('"').next())
            .collect();
        routed.sort_unstable();
        routed.dedup();
        let api = ApiDoc::openapi();
        let documented: Vec<&str> = api.paths.paths.keys().map(String::as_str).collect();
        assert_eq!(routed, documented);
    }
}
