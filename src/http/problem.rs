//! RFC 9457 problem details: every error the API returns. Each kind of error has a stable
//! `type` (`urn:switchboard:problem:<code>`, the same `code` beside it) and a fixed `title`
//! ([`ProblemType`] is the one list); invalid requests name every field at fault in `errors`
//! (`[{"pointer": "/patient", "detail": "…"}]`, or `"parameter"`/`"header"` for what is not in
//! the body), and `pointer` repeats the first one's. Details are written for the API client
//! and never carry internals (SQL, paths, stack traces) or PHI.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::inbound::InboundError;
use crate::messages::MessageError;
use crate::service::{FieldError, Refusal, ServiceError};

/// Every kind of problem the HTTP surface answers with. The code (and so the `type`) of a
/// variant never changes; clients may branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: the body is JSON but not the request's shape (wrong type, unknown or missing
    /// field); `errors` point at the fields.
    InvalidBody,
    /// 400: a query parameter cannot be read; `errors` name it.
    InvalidParameter,
    /// 400: a header cannot be read; `errors` name it.
    InvalidHeader,
    /// 400: a provider webhook's payload cannot be read.
    InvalidWebhookPayload,
    /// 401: no valid bearer key (or metrics token).
    Unauthorized,
    /// 403: the key lacks the route's scope; `scope` names it.
    InsufficientScope,
    /// 403: a provider webhook's signature is missing or wrong.
    WebhookSignatureInvalid,
    /// 404: no such record (or another organization's), route or connector.
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 409: the `Idempotency-Key` was used with a different request.
    IdempotencyKeyReused,
    /// 409: the inbound item is already filed.
    InboundAlreadyFiled,
    /// 409: the inbound item is not in a state the decision applies to.
    InboundWrongState,
    DeadLetterRetried,
    /// 409: HL7 reprocessing asked of a daemon that runs no HL7 listener.
    Hl7NotListening,
    /// 409: the campaign is not in a state the action applies to (resuming a cancelled one).
    CampaignWrongState,
    /// 413: the body is over `server.max_body_bytes`, or an attachment over a `[limits]`
    /// size (`errors` point at it: `/attachments/0`).
    PayloadTooLarge,
    /// 415: the body is not `application/json` (`POST /v1/messages`: nor `multipart/form-data`).
    UnsupportedMediaType,
    /// 422: the request is well-formed but invalid; `errors` name every field at fault.
    ValidationFailed,
    /// 422: a channel the configuration carries nothing for; `pointer` names the field.
    ChannelNotConfigured,
    /// 422: the organization has as many reminder rules as it may.
    ReminderRuleLimit,
    /// 500: our fault; logged, never detailed.
    Internal,
    /// 503: the concurrency limit is reached (`Retry-After`).
    Overloaded,
    /// 503: the handler did not finish within `server.request_timeout_secs`.
    Timeout,
    /// 503: the database does not answer (`/readyz`).
    DatabaseUnavailable,
}

impl ProblemType {
    /// Every problem type, for documentation and tests.
    pub const ALL: [ProblemType; 26] = [
        ProblemType::MalformedJson,
        ProblemType::InvalidBody,
        ProblemType::InvalidParameter,
        ProblemType::InvalidHeader,
        ProblemType::InvalidWebhookPayload,
        ProblemType::Unauthorized,
        ProblemType::InsufficientScope,
        ProblemType::WebhookSignatureInvalid,
        ProblemType::NotFound,
        ProblemType::MethodNotAllowed,
        ProblemType::RequestTimeout,
        ProblemType::IdempotencyKeyReused,
        ProblemType::InboundAlreadyFiled,
        ProblemType::InboundWrongState,
        ProblemType::DeadLetterRetried,
        ProblemType::Hl7NotListening,
        ProblemType::CampaignWrongState,
        ProblemType::PayloadTooLarge,
        ProblemType::UnsupportedMediaType,
        ProblemType::ValidationFailed,
        ProblemType::ChannelNotConfigured,
        ProblemType::ReminderRuleLimit,
        ProblemType::Internal,
        ProblemType::Overloaded,
        ProblemType::Timeout,
        ProblemType::DatabaseUnavailable,
    ];

    /// The stable code; the `type` is `urn:switchboard:problem:<code>`.
    pub fn code(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "malformed_json",
            ProblemType::InvalidBody => "invalid_body",
            ProblemType::InvalidParameter => "invalid_parameter",
            ProblemType::InvalidHeader => "invalid_header",
            ProblemType::InvalidWebhookPayload => "invalid_webhook_payload",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::InsufficientScope => "insufficient_scope",
            ProblemType::WebhookSignatureInvalid => "webhook_signature_invalid",
            ProblemType::NotFound => "not_found",
            ProblemType::MethodNotAllowed => "method_not_allowed",
            ProblemType::RequestTimeout => "request_timeout",
            ProblemType::IdempotencyKeyReused => "idempotency_key_reused",
            ProblemType::InboundAlreadyFiled => "inbound_already_filed",
            ProblemType::InboundWrongState => "inbound_wrong_state",
            ProblemType::DeadLetterRetried => "dead_letter_retried",
            ProblemType::Hl7NotListening => "reprocess_unavailable",
            ProblemType::CampaignWrongState => "campaign_wrong_state",
            ProblemType::PayloadTooLarge => "payload_too_large",
            ProblemType::UnsupportedMediaType => "unsupported_media_type",
            ProblemType::ValidationFailed => "validation_failed",
            ProblemType::ChannelNotConfigured => "channel_not_configured",
            ProblemType::ReminderRuleLimit => "reminder_rule_limit",
            ProblemType::Internal => "internal_error",
            ProblemType::Overloaded => "overloaded",
            ProblemType::Timeout => "timeout",
            ProblemType::DatabaseUnavailable => "database_unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::MalformedJson
            | ProblemType::InvalidBody
            | ProblemType::InvalidParameter
            | ProblemType::InvalidHeader
            | ProblemType::InvalidWebhookPayload => StatusCode::BAD_REQUEST,
            ProblemType::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemType::InsufficientScope | ProblemType::WebhookSignatureInvalid => {
                StatusCode::FORBIDDEN
            }
            ProblemType::NotFound => StatusCode::NOT_FOUND,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemType::IdempotencyKeyReused
            | ProblemType::InboundAlreadyFiled
            | ProblemType::InboundWrongState
            | ProblemType::DeadLetterRetried
            | ProblemType::Hl7NotListening
            | ProblemType::CampaignWrongState => StatusCode::CONFLICT,
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::ValidationFailed
            | ProblemType::ChannelNotConfigured
            | ProblemType::ReminderRuleLimit => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::Overloaded | ProblemType::Timeout | ProblemType::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The title: the same for every occurrence of the type (RFC 9457 §3.1.4).
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "Malformed JSON",
            ProblemType::InvalidBody => "Invalid request body",
            ProblemType::InvalidParameter => "Invalid parameter",
            ProblemType::InvalidHeader => "Invalid header",
            ProblemType::InvalidWebhookPayload => "Invalid webhook payload",
            ProblemType::Unauthorized => "Unauthorized",
            ProblemType::InsufficientScope => "Insufficient scope",
            ProblemType::WebhookSignatureInvalid => "Webhook signature invalid",
            ProblemType::NotFound => "Not found",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::RequestTimeout => "Request timeout",
            ProblemType::IdempotencyKeyReused => "Idempotency key reused",
            ProblemType::InboundAlreadyFiled => "Inbound item already filed",
            ProblemType::InboundWrongState => "Inbound item not in that state",
            ProblemType::DeadLetterRetried => "Dead letter already retried",
            ProblemType::Hl7NotListening => "No HL7 listener on this daemon",
            ProblemType::CampaignWrongState => "Campaign not in a state for this",
            ProblemType::PayloadTooLarge => "Payload too large",
            ProblemType::UnsupportedMediaType => "Unsupported media type",
            ProblemType::ValidationFailed => "Validation failed",
            ProblemType::ChannelNotConfigured => "Channel not configured",
            ProblemType::ReminderRuleLimit => "Reminder rule limit reached",
            ProblemType::Internal => "Internal error",
            ProblemType::Overloaded => "Overloaded",
            ProblemType::Timeout => "Timeout",
            ProblemType::DatabaseUnavailable => "Database unavailable",
        }
    }

    /// `urn:switchboard:problem:<code>`.
    pub fn uri(self) -> String {
        format!("urn:switchboard:problem:{}", self.code())
    }
}

/// A problem+json body. Small (a type, a detail, boxed extension members), since every
/// handler's `Result` carries one.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemType,
    detail: Option<String>,
    extra: Option<Box<ProblemExtra>>,
}

/// Extension members (RFC 9457 §3.2).
#[derive(Debug, Clone, Default)]
struct ProblemExtra {
    /// The API key scope the request needs (403 `insufficient_scope`).
    scope: Option<String>,
    /// Every field at fault.
    errors: Vec<FieldError>,
}

/// The members as sent (and, in the OpenAPI document, the `Problem` schema).
#[derive(Serialize, utoipa::ToSchema)]
struct Wire<'a> {
    /// `urn:switchboard:problem:<code>`.
    #[serde(rename = "type")]
    kind: String,
    /// The same for every problem of a type.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// For the API client; never internals or PHI.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    /// The stable code the `type` ends with.
    code: &'static str,
    /// JSON Pointer (RFC 6901) to the first body field at fault (the first of `errors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pointer: Option<&'a str>,
    /// The API key scope the request needs (403 `insufficient_scope`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    /// Every field at fault.
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extra = self.extra.as_deref();
        let errors = extra.map_or(&[][..], |e| e.errors.as_slice());
        Wire {
            kind: self.kind.uri(),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: self.detail.as_deref(),
            code: self.kind.code(),
            pointer: errors.iter().find_map(FieldError::json_pointer),
            scope: extra.and_then(|e| e.scope.as_deref()),
            errors,
        }
        .serialize(serializer)
    }
}

/// The schema of every problem+json body: the wire struct's, under the name `Problem`.
impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <Wire<'static> as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        "Problem".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <Wire<'static> as utoipa::ToSchema>::schemas(schemas);
    }
}

impl Problem {
    /// The problem's type.
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: Some(detail.into()),
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut ProblemExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// A problem about fields: `errors` lists them, `pointer` repeats the first body field's.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.extra().errors = errors;
        self
    }

    /// 422 `validation_failed` naming every field at fault.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| e.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(ProblemType::ValidationFailed, detail).with_errors(errors)
    }

    /// 403: the API key is valid but lacks the scope this route needs.
    pub fn insufficient_scope(scope: &str) -> Self {
        let mut problem = Self::new(
            ProblemType::InsufficientScope,
            format!("this API key lacks the `{scope}` scope, which this request needs"),
        );
        problem.extra().scope = Some(scope.to_string());
        problem
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ProblemType::Unauthorized,
            "a valid bearer API key is required",
        )
    }

    /// A server-side failure: logged by the caller, shown without details.
    pub fn internal() -> Self {
        Self::new(ProblemType::Internal, "internal error; see the daemon log")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let scope = self.extra.as_ref().and_then(|e| e.scope.clone());
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        // RFC 6750 §3: the scope the request needs, machine-readable.
        if let Some(scope) = &scope
            && let Ok(value) = header::HeaderValue::from_str(&format!(
                "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
            ))
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<MessageError> for Problem {
    fn from(error: MessageError) -> Self {
        use crate::messages::MessageError as E;
        match error {
            E::Invalid { ref at, .. } => {
                let at = at.clone();
                Problem::new(ProblemType::ValidationFailed, error.to_string()).with_errors(vec![
                    FieldError {
                        location: at,
                        detail: error.to_string(),
                    },
                ])
            }
            E::ChannelNotConfigured { ref pointer, .. } => {
                let pointer = pointer.clone();
                Problem::new(ProblemType::ChannelNotConfigured, error.to_string())
                    .with_errors(vec![FieldError::pointer(pointer, error.to_string())])
            }
            E::TooLarge { ref pointer, .. } => {
                let pointer = pointer.clone();
                Problem::new(ProblemType::PayloadTooLarge, error.to_string())
                    .with_errors(vec![FieldError::pointer(pointer, error.to_string())])
            }
            E::NotFound(what) => Problem::not_found(format!("{what} not found")),
            E::KeyReused => Problem::new(ProblemType::IdempotencyKeyReused, error.to_string()),
            // The database or at-rest crypto failed: logged, never detailed.
            internal => {
                tracing::error!(error = %internal, "message service error");
                Problem::internal()
            }
        }
    }
}

impl From<ServiceError> for Problem {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(errors) => Problem::invalid(errors),
            ServiceError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            ServiceError::Refused { refusal, detail } => Problem::new(
                match refusal {
                    Refusal::InboundAlreadyFiled => ProblemType::InboundAlreadyFiled,
                    Refusal::InboundWrongState => ProblemType::InboundWrongState,
                    Refusal::ReminderRuleLimit => ProblemType::ReminderRuleLimit,
                    Refusal::DeadLetterRetried => ProblemType::DeadLetterRetried,
                    Refusal::Hl7NotListening => ProblemType::Hl7NotListening,
                    Refusal::CampaignWrongState => ProblemType::CampaignWrongState,
                },
                detail,
            ),
            ServiceError::Message(e) => e.into(),
            // The database, at-rest crypto or another internal part failed: logged, never
            // detailed.
            internal => {
                tracing::error!(error = %internal, "service error");
                Problem::internal()
            }
        }
    }
}

impl From<InboundError> for Problem {
    fn from(error: InboundError) -> Self {
        ServiceError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_type_has_its_own_code_and_an_error_status() {
        let mut codes: Vec<&str> = ProblemType::ALL.iter().map(|t| t.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ProblemType::ALL.len(), "codes are unique");
        for kind in ProblemType::ALL {
            assert!(
                kind.status().is_client_error() || kind.status().is_server_error(),
                "{kind:?}"
            );
            assert!(
                kind.code()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_problem_about_fields_points_at_the_first_body_field() {
        let problem = Problem::invalid(vec![
            FieldError::parameter("external_id", "too long"),
            FieldError::pointer("/birth_date", "must be YYYY-MM-DD"),
        ]);
        let json = serde_json::to_value(&problem).expect("json");
        assert_eq!(json["type"], "urn:switchboard:problem:validation_failed");
        assert_eq!(json["code"], "validation_failed");
        assert_eq!(json["status"], 422);
        assert_eq!(json["pointer"], "/birth_date");
        assert_eq!(json["errors"][0]["parameter"], "external_id");
        assert_eq!(json["errors"][1]["pointer"], "/birth_date");
    }
}
