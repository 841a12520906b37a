//! Reading provider payloads: form-encoded or JSON bodies, fields found by name (form) or by
//! JSON pointer (`/data/payload/id`).

use super::manifest::Encoding;

/// A parsed webhook or API body.
#[derive(Debug, Clone)]
pub enum Payload {
    Form(Vec<(String, String)>),
    Json(serde_json::Value),
}

#[derive(Debug, thiserror::Error)]
#[error("body is not valid {0}")]
pub struct PayloadError(&'static str);

impl Payload {
    pub fn parse(encoding: Encoding, body: &[u8]) -> Result<Self, PayloadError> {
        match encoding {
            Encoding::Json => serde_json::from_slice(body)
                .map(Payload::Json)
                .map_err(|_| PayloadError("JSON")),
            Encoding::Form | Encoding::Multipart => {
                if std::str::from_utf8(body).is_err() {
                    return Err(PayloadError("form data"));
                }
                Ok(Payload::Form(
                    form_urlencoded::parse(body)
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect(),
                ))
            }
        }
    }

    /// The value at `location` as text (numbers and booleans as written); `None` when absent,
    /// null or empty.
    pub fn get(&self, location: &str) -> Option<String> {
        let value = match self {
            Payload::Form(pairs) => pairs
                .iter()
                .find(|(k, _)| k == location)
                .map(|(_, v)| v.clone()),
            Payload::Json(json) => {
                let pointer = if location.starts_with('/') {
                    location.to_string()
                } else {
                    format!("/{location}")
                };
                json.pointer(&pointer).and_then(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
            }
        };
        value.filter(|v| !v.is_empty())
    }

    /// Media URLs: form fields `<prefix>0`, `<prefix>1`, ... or a JSON array of strings or of
    /// objects with `url`.
    pub fn media(&self, spec: &str) -> Vec<String> {
        match self {
            Payload::Form(_) => (0..10)
                .map_while(|i| self.get(&format!("{spec}{i}")))
                .collect(),
            Payload::Json(json) => json
                .pointer(spec)
                .and_then(|v| v.as_array())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| {
                            item.as_str()
                                .or_else(|| item.get("url").and_then(|u| u.as_str()))
                                .map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Form parameters (for signature schemes that sign them).
    pub fn form_pairs(&self) -> &[(String, String)] {
        match self {
            Payload::Form(pairs) => pairs,
            Payload::Json(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_form_and_json_locations() {
        let form = Payload::parse(
            Encoding::Form,
            b"MessageSid=SM1&Body=Hi+there&MediaUrl0=u0&MediaUrl1=u1&Empty=",
        )
        .unwrap();
        assert_eq!(form.get("Body").as_deref(), Some("Hi there"));
        assert_eq!(form.get("Empty"), None);
        assert_eq!(form.media("MediaUrl"), vec!["u0", "u1"]);
        let json = Payload::parse(
            Encoding::Json,
            br#"{"data":{"payload":{"id":"m1","to":[{"status":"delivered"}],"errors":[{"code":40300}],"media":[{"url":"x"}]}}}"#,
        )
        .unwrap();
        assert_eq!(
            json.get("/data/payload/to/0/status").as_deref(),
            Some("delivered")
        );
        assert_eq!(
            json.get("/data/payload/errors/0/code").as_deref(),
            Some("40300")
        );
        assert_eq!(json.media("/data/payload/media"), vec!["x"]);
        assert!(Payload::parse(Encoding::Json, b"{").is_err());
    }
}
