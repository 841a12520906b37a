//! What the services share: the error they answer with. Services (`messages`, `patients`,
//! `appointments`, `staff`, `inbound`, `deliveries`, `events`, `keys`, `ops`, reminder rules)
//! sit between the edges (HTTP, webhooks, CLI) and the store: they validate, decide and call
//! the store, and they refuse in these words; an edge only translates them (HTTP: a
//! problem+json with a stable `type`, see `crate::http::Problem`).
//!
//! A validation failure names every field at fault, each by where it is in the request: a
//! JSON pointer into the body (`/contact_points/1/system`), a path or query parameter, or a
//! header.

use serde::Serialize;

use crate::crypto::CryptoError;
use crate::messages::MessageError;
use crate::store::StoreError;

/// Where in a request a field is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// A JSON pointer (RFC 6901) into the request body: `/patient`, `/consents/0/status`;
    /// `""` is the body itself.
    Pointer(String),
    /// A path or query parameter by name: `external_id`, `after`.
    Parameter(String),
    /// A request header by name: `Idempotency-Key`.
    Header(String),
}

/// One field at fault and why. The detail names the field's rule, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where the field is (`"pointer": "/patient"`, `"parameter": "after"`, `"header": …`).
    #[serde(flatten)]
    pub location: Location,
    /// What is wrong with it, for a person.
    pub detail: String,
}

impl FieldError {
    /// A field of the body, by JSON pointer.
    pub fn pointer(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            location: Location::Pointer(pointer.into()),
            detail: detail.into(),
        }
    }

    /// A path or query parameter.
    pub fn parameter(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            location: Location::Parameter(name.into()),
            detail: detail.into(),
        }
    }

    /// A request header.
    pub fn header(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            location: Location::Header(name.into()),
            detail: detail.into(),
        }
    }

    /// The JSON pointer, when the field is in the body.
    pub fn json_pointer(&self) -> Option<&str> {
        match &self.location {
            Location::Pointer(p) => Some(p),
            _ => None,
        }
    }
}

/// JSON pointer escaping of one reference token (RFC 6901 §3: `~` → `~0`, `/` → `~1`).
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Refusals other than invalid fields: the state of things does not allow the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The inbound item is already filed in a thread.
    InboundAlreadyFiled,
    /// The inbound item is not in a state the decision applies to (dismissing a filed item,
    /// reassigning an unmatched one, ...).
    InboundWrongState,
    /// The organization has as many reminder rules as it may.
    ReminderRuleLimit,
    /// The dead letter was retried already (a retry is a new delivery, made once).
    DeadLetterRetried,
    /// HL7 reprocessing asked of a daemon without an HL7 listener.
    Hl7NotListening,
    /// The campaign is not in a state the action applies to (resuming a cancelled campaign).
    CampaignWrongState,
}

/// Why a service did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is invalid: every field at fault (at least one).
    #[error("{}", summary(.0))]
    Invalid(Vec<FieldError>),
    /// The record does not exist, or belongs to another organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Refused for the state of the records (see [`Refusal`]).
    #[error("{detail}")]
    Refused { refusal: Refusal, detail: String },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The message service refused or failed (a service that sends, e.g. an answer to a text).
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Something of ours failed that is neither store nor crypto (a template, a serializer).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            // A store `NotFound` that a service did not name is still a 404, never a 500.
            StoreError::NotFound => ServiceError::NotFound("record"),
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    /// One invalid field of the body.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        ServiceError::Invalid(vec![FieldError::pointer(pointer, detail)])
    }
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors while a request is checked, so one answer names them all.
#[derive(Debug, Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a field at fault.
    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// Records a body field at fault.
    pub fn invalid(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.push(FieldError::pointer(pointer, detail));
    }

    /// Records `error` when `ok` is false.
    pub fn check(&mut self, ok: bool, pointer: impl Into<String>, detail: impl Into<String>) {
        if !ok {
            self.invalid(pointer, detail);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(())` when nothing is at fault, else every field error.
    pub fn finish(self) -> Result<(), ServiceError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_serialize_with_their_location() {
        let errors = vec![
            FieldError::pointer("/patient/phone", "not a number"),
            FieldError::parameter("after", "not a cursor"),
            FieldError::header("Idempotency-Key", "too long"),
        ];
        assert_eq!(
            serde_json::to_value(&errors).expect("json"),
            serde_json::json!([
                {"pointer": "/patient/phone", "detail": "not a number"},
                {"parameter": "after", "detail": "not a cursor"},
                {"header": "Idempotency-Key", "detail": "too long"},
            ])
        );
    }

    #[test]
    fn checks_collect_every_field() {
        let mut checks = Checks::new();
        checks.check(true, "/a", "fine");
        checks.check(false, "/b", "b is wrong");
        checks.invalid("/c", "c is wrong");
        match checks.finish() {
            Err(ServiceError::Invalid(errors)) => {
                assert_eq!(errors.len(), 2);
                assert_eq!(errors[1].json_pointer(), Some("/c"));
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
    }
}
