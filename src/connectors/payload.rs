//! Reading provider payloads: form-encoded, JSON or `multipart/form-data` bodies, fields found
//! by name (form, multipart) or by JSON pointer (`/data/payload/id`); in a multipart body,
//! `field/pointer` reads a JSON pointer inside a field that holds JSON (Phaxio's `fax/id`).

use super::manifest::Encoding;

/// A parsed webhook or API body.
#[derive(Debug, Clone)]
pub enum Payload {
    Form(Vec<(String, String)>),
    Json(serde_json::Value),
    /// `multipart/form-data`: text fields in order, then the file parts (a part with a
    /// filename) in order.
    Multipart {
        fields: Vec<(String, String)>,
        files: Vec<FilePart>,
    },
}

/// One file part of a multipart body.
#[derive(Clone)]
pub struct FilePart {
    /// The form field name (`file`).
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: bytes::Bytes,
}

impl std::fmt::Debug for FilePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes (PHI) nor the file name.
        f.debug_struct("FilePart")
            .field("name", &self.name)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// Bounds on a multipart body: what a provider may post at most.
#[derive(Debug, Clone, Copy)]
pub struct MultipartLimits {
    /// Largest text field (bytes).
    pub field_bytes: u64,
    /// Largest file part (bytes).
    pub file_bytes: u64,
    /// Most parts.
    pub parts: usize,
}

impl Default for MultipartLimits {
    fn default() -> Self {
        Self {
            field_bytes: 1024 * 1024,
            file_bytes: 50 * 1024 * 1024,
            parts: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("body is not valid {0}")]
pub struct PayloadError(&'static str);

/// Why a multipart body was not read.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("Content-Type is not multipart/form-data with a boundary")]
    NotMultipart,
    #[error("a part is over the size limit")]
    TooLarge,
    #[error("more than {0} parts")]
    TooManyParts(usize),
    #[error("a text field is not UTF-8")]
    NotText,
    #[error("malformed multipart body: {0}")]
    Malformed(String),
}

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

    /// Reads a whole `multipart/form-data` body (its `Content-Type` header value gives the
    /// boundary) within `limits`.
    pub async fn parse_multipart(
        content_type: &str,
        body: bytes::Bytes,
        limits: MultipartLimits,
    ) -> Result<Self, MultipartError> {
        let boundary =
            multer::parse_boundary(content_type).map_err(|_| MultipartError::NotMultipart)?;
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .whole_stream(limits.file_bytes.saturating_add(limits.field_bytes * 4))
                .per_field(limits.file_bytes.max(limits.field_bytes)),
        );
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
        let mut fields = Vec::new();
        let mut files = Vec::new();
        let too_large = |e: multer::Error| match e {
            multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
                MultipartError::TooLarge
            }
            other => MultipartError::Malformed(other.to_string()),
        };
        while let Some(field) = multipart.next_field().await.map_err(too_large)? {
            if fields.len() + files.len() >= limits.parts {
                return Err(MultipartError::TooManyParts(limits.parts));
            }
            let name = field.name().unwrap_or_default().to_string();
            let filename = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(|m| m.essence_str().to_string());
            let bytes = field.bytes().await.map_err(too_large)?;
            if filename.is_some() {
                if bytes.len() as u64 > limits.file_bytes {
                    return Err(MultipartError::TooLarge);
                }
                files.push(FilePart {
                    name,
                    filename,
                    content_type,
                    bytes,
                });
            } else {
                if bytes.len() as u64 > limits.field_bytes {
                    return Err(MultipartError::TooLarge);
                }
                let text =
                    String::from_utf8(bytes.to_vec()).map_err(|_| MultipartError::NotText)?;
                fields.push((name, text));
            }
        }
        Ok(Payload::Multipart { fields, files })
    }

    /// The file parts (multipart only).
    pub fn files(&self) -> &[FilePart] {
        match self {
            Payload::Multipart { files, .. } => files,
            _ => &[],
        }
    }

    /// The value at `location` as text (numbers and booleans as written); `None` when absent,
    /// null or empty.
    pub fn get(&self, location: &str) -> Option<String> {
        let value = match self {
            Payload::Multipart { fields, .. } => {
                let (name, pointer) = match location.split_once('/') {
                    Some((name, pointer)) if !name.is_empty() => (name, Some(pointer)),
                    _ => (location, None),
                };
                // The last of a repeated name, as form readers (and Phaxio's signers) take it.
                let text = fields
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v)?;
                match pointer {
                    None => Some(text.clone()),
                    Some(pointer) => {
                        let json: serde_json::Value = serde_json::from_str(text).ok()?;
                        return Payload::Json(json).get(&format!("/{pointer}"));
                    }
                }
            }
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
            Payload::Form(_) | Payload::Multipart { .. } => (0..10)
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
            Payload::Multipart { fields, .. } => fields,
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
