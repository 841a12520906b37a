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
    /// The request field the problem is about, as a JSON pointer (RFC 6901) into the body
    /// (`/touches/1/before`); an extension member (RFC 9457 §3.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            pointer: None,
        }
    }

    /// 422 about one field of the request body, named by its JSON pointer.
    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            ..Self::unprocessable(detail)
        }
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
        response
    }
}

impl From<crate::messages::MessageError> for Problem {
    fn from(error: crate::messages::MessageError) -> Self {
        use crate::messages::MessageError as E;
        match error {
            E::Invalid { .. } => Problem::unprocessable(error.to_string()),
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
