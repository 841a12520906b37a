//! RFC 9457 problem details: every error the API returns. Details are written for the API
//! client and never carry internals (SQL, paths, stack traces) or PHI.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members, boxed so the common case stays small.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<ProblemExtra>>,
}

/// Problem extension members (RFC 9457 §3.2).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProblemExtra {
    /// A stable machine-readable code (`channel_not_configured`, `insufficient_scope`); the
    /// `type` is then `urn:switchboard:problem:<code>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// JSON Pointer (RFC 6901) to the request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The API key scope the request needs (403 `insufficient_scope`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut ProblemExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Names the problem with a stable code (and the matching `type`).
    pub fn with_code(mut self, code: &str) -> Self {
        self.kind = format!("urn:switchboard:problem:{code}");
        self.extra().code = Some(code.to_string());
        self
    }

    /// 422 about one field of the request body, named by its JSON pointer.
    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::unprocessable(detail).with_pointer(pointer)
    }

    /// Points at the request field at fault (`/recipients/0/channel`).
    pub fn with_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.extra().pointer = Some(pointer.into());
        self
    }

    /// 403: the API key is valid but lacks the scope this route needs.
    pub fn insufficient_scope(scope: &str) -> Self {
        let mut problem = Self::new(
            StatusCode::FORBIDDEN,
            format!("this API key lacks the `{scope}` scope, which this request needs"),
        )
        .with_code("insufficient_scope");
        problem.extra().scope = Some(scope.to_string());
        problem
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer API key is required",
        )
    }

    /// A server-side failure: logged by id by the caller, shown without details.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the daemon log",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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

impl From<crate::messages::MessageError> for Problem {
    fn from(error: crate::messages::MessageError) -> Self {
        use crate::messages::MessageError as E;
        match error {
            E::Invalid { .. } => Problem::unprocessable(error.to_string()),
            E::ChannelNotConfigured { ref pointer, .. } => {
                let pointer = pointer.clone();
                Problem::unprocessable(error.to_string())
                    .with_code("channel_not_configured")
                    .with_pointer(pointer)
            }
            E::NotFound(what) => Problem::not_found(format!("{what} not found")),
            E::KeyReused => Problem::new(StatusCode::CONFLICT, error.to_string()),
            E::Store(e) => {
                tracing::error!(error = %e, "store error");
                Problem::internal()
            }
            E::Crypto(e) => {
                tracing::error!(error = %e, "at-rest crypto error");
                Problem::internal()
            }
        }
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(error: crate::store::StoreError) -> Self {
        match error {
            crate::store::StoreError::NotFound => Problem::not_found("not found"),
            other => {
                tracing::error!(error = %other, "store error");
                Problem::internal()
            }
        }
    }
}

impl From<crate::inbound::InboundError> for Problem {
    fn from(error: crate::inbound::InboundError) -> Self {
        use crate::inbound::InboundError as E;
        match error {
            E::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "inbound handling error");
                Problem::internal()
            }
        }
    }
}
