//! Extractors whose rejections are problem+json naming the field at fault: [`ApiJson`] for
//! bodies (not JSON: 400 `malformed_json`; JSON of the wrong shape: 400 `invalid_body` with a
//! JSON pointer per field; a wrong content type 415, an oversize body 413) and [`ApiQuery`]
//! for query strings (400 `invalid_parameter` naming the parameter).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::problem::{Problem, ProblemType};
use crate::service::{FieldError, pointer_token};

/// A JSON request body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(Problem::new(
                ProblemType::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(ProblemType::PayloadTooLarge, "request body too large")
            } else {
                Problem::new(ProblemType::InvalidBody, e.body_text())
            }
        })?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
pub(super) fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Reads a body, naming the field at fault when it is JSON of the wrong shape.
pub(super) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let inner = e.inner();
        if inner.is_data() {
            let (pointer, detail) = located(e.path(), &without_position(inner));
            Problem::new(
                ProblemType::InvalidBody,
                format!("invalid request: {}: {detail}", display_pointer(&pointer)),
            )
            .with_errors(vec![FieldError::pointer(pointer, detail)])
        } else {
            Problem::new(
                ProblemType::MalformedJson,
                format!("malformed JSON: {inner}"),
            )
        }
    })?;
    deserializer
        .end()
        .map_err(|e| Problem::new(ProblemType::MalformedJson, format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The JSON pointer of the field at fault and the error's text. serde reports a missing or an
/// unknown field at its parent; the pointer then names the field itself.
fn located(path: &serde_path_to_error::Path, message: &str) -> (String, String) {
    let mut pointer = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{}", pointer_token(key))),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    for prefix in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((name, _)) = rest.split_once('`')
        {
            let own = format!("/{}", pointer_token(name));
            if !pointer.ends_with(&own) {
                pointer.push_str(&own);
            }
        }
    }
    (pointer, message.to_string())
}

/// serde_json's message without its " at line L column C".
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) if error.line() > 0 => text[..at].to_string(),
        _ => text,
    }
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the body"
    } else {
        pointer
    }
}

/// A query string of type `T`.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|e| {
                let name = e
                    .path()
                    .iter()
                    .find_map(|s| match s {
                        Segment::Map { key } => Some(key.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let detail = e.inner().to_string();
                Problem::new(
                    ProblemType::InvalidParameter,
                    format!("query parameter {name}: {detail}"),
                )
                .with_errors(vec![FieldError::parameter(name, detail)])
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        body: String,
        #[serde(default)]
        recipients: Vec<Recipient>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Recipient {
        channel: String,
    }

    fn problem(json: &str) -> serde_json::Value {
        let problem = parse_body::<Body>(json.as_bytes()).expect_err("refused");
        serde_json::to_value(problem).expect("json")
    }

    #[test]
    fn a_mistyped_field_is_pointed_at() {
        let p = problem(r#"{"body": "x", "recipients": [{"channel": 5}]}"#);
        assert_eq!(p["code"], "invalid_body");
        assert_eq!(p["status"], 400);
        assert_eq!(p["errors"][0]["pointer"], "/recipients/0/channel", "{p}");
        assert_eq!(p["pointer"], "/recipients/0/channel");
    }

    #[test]
    fn missing_and_unknown_fields_are_pointed_at() {
        assert_eq!(problem(r#"{"recipients": []}"#)["pointer"], "/body");
        let p = problem(r#"{"body": "x", "recipients": [{"channel": "sms", "pager": 1}]}"#);
        assert_eq!(p["pointer"], "/recipients/0/pager", "{p}");
    }

    #[test]
    fn not_json_is_malformed() {
        assert_eq!(problem("{not json")["code"], "malformed_json");
        assert_eq!(
            problem(r#"{"body": "x"} trailing"#)["code"],
            "malformed_json"
        );
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            json_content_type(&headers)
        };
        assert!(with("application/json"));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!json_content_type(&HeaderMap::new()));
    }
}
