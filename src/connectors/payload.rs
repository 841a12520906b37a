//! Reading provider payloads: form-encoded, multipart or JSON bodies, fields found by name
//! (form), by JSON pointer (`/data/payload/id`), or by a pointer into a form field that holds
//! JSON (`fax#/id`: Phaxio posts its fax as a JSON document in the `fax` field).
//!
//! Multipart bodies are read with caps (parts, field sizes); file parts keep their bytes for
//! the signature schemes that hash them.

use super::manifest::Encoding;

/// A parsed webhook or API body.
#[derive(Debug, Clone)]
pub enum Payload {
    Form(Vec<(String, String)>),
    Json(serde_json::Value),
    /// `multipart/form-data`: text fields and file parts.
    Multipart {
        fields: Vec<(String, String)>,
        files: Vec<FilePart>,
    },
}

/// A file part of a multipart body.
#[derive(Debug, Clone)]
pub struct FilePart {
    /// The part's name (`file`).
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: bytes::Bytes,
}

/// Most parts a multipart body may have.
pub const MAX_PARTS: usize = 64;
/// Largest text field of a multipart body.
pub const MAX_FIELD_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("body is not valid {0}")]
pub struct PayloadError(&'static str);

impl Payload {
    /// Parses a body, using the request's `Content-Type` for multipart bodies (their
    /// boundary); a form-encoded body is accepted where the manifest says multipart.
    pub fn parse_typed(
        encoding: Encoding,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, PayloadError> {
        match (encoding, content_type.and_then(boundary)) {
            (Encoding::Multipart, Some(boundary)) => parse_multipart(&boundary, body),
            _ => Self::parse(encoding, body),
        }
    }

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
            Payload::Form(pairs) | Payload::Multipart { fields: pairs, .. } => {
                match location.split_once('#') {
                    Some((field, pointer)) => {
                        let text = pairs.iter().find(|(k, _)| k == field).map(|(_, v)| v)?;
                        let json: serde_json::Value = serde_json::from_str(text).ok()?;
                        json_text(&json, pointer)
                    }
                    None => pairs
                        .iter()
                        .find(|(k, _)| k == location)
                        .map(|(_, v)| v.clone()),
                }
            }
            Payload::Json(json) => json_text(json, location),
        };
        value.filter(|v| !v.is_empty())
    }

    /// File parts (multipart bodies only).
    pub fn files(&self) -> &[FilePart] {
        match self {
            Payload::Multipart { files, .. } => files,
            _ => &[],
        }
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
            Payload::Form(pairs) | Payload::Multipart { fields: pairs, .. } => pairs,
            Payload::Json(_) => &[],
        }
    }
}

fn json_text(json: &serde_json::Value, location: &str) -> Option<String> {
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

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// A `name="value"` parameter of a Content-Disposition header.
fn disposition_param(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn parse_multipart(boundary: &str, body: &[u8]) -> Result<Payload, PayloadError> {
    let bad = || PayloadError("multipart/form-data");
    let delimiter = format!("--{boundary}");
    let inner = format!("\r\n--{boundary}");
    let start = memchr::memmem::find(body, delimiter.as_bytes()).ok_or_else(bad)?;
    let mut rest = &body[start + delimiter.len()..];
    let mut fields = Vec::new();
    let mut files = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").ok_or_else(bad)?;
        if fields.len() + files.len() >= MAX_PARTS {
            return Err(bad());
        }
        let head_end = memchr::memmem::find(rest, b"\r\n\r\n").ok_or_else(bad)?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| bad())?;
        let content = &rest[head_end + 4..];
        let end = memchr::memmem::find(content, inner.as_bytes()).ok_or_else(bad)?;
        let data = &content[..end];
        rest = &content[end + inner.len()..];
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                name = disposition_param(value, "name");
                filename = disposition_param(value, "filename");
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(value.trim().to_ascii_lowercase());
            }
        }
        let name = name.ok_or_else(bad)?;
        if filename.is_some() {
            files.push(FilePart {
                name,
                filename,
                content_type,
                data: bytes::Bytes::copy_from_slice(data),
            });
        } else {
            if data.len() > MAX_FIELD_BYTES {
                return Err(bad());
            }
            let value = std::str::from_utf8(data).map_err(|_| bad())?;
            fields.push((name, value.to_string()));
        }
    }
    Ok(Payload::Multipart { fields, files })
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

    #[test]
    fn reads_multipart_fields_files_and_json_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"fax\"\r\n\r\n{\"id\":123,\"status\":\"success\",\"num_pages\":3}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"success\"\r\n\r\ntrue\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n-1\r\n--XyZ--\r\n";
        let p = Payload::parse_typed(
            Encoding::Multipart,
            Some("multipart/form-data; boundary=XyZ"),
            body,
        )
        .unwrap();
        assert_eq!(p.get("fax#/id").as_deref(), Some("123"));
        assert_eq!(p.get("fax#/num_pages").as_deref(), Some("3"));
        assert_eq!(p.get("success").as_deref(), Some("true"));
        assert_eq!(p.files().len(), 1);
        assert_eq!(p.files()[0].data.as_ref(), b"%PDF\r\n-1");
        assert!(
            Payload::parse_typed(
                Encoding::Multipart,
                Some("multipart/form-data; boundary=XyZ"),
                b"--XyZ\r\nno end"
            )
            .is_err()
        );
        // Form-encoded where multipart was expected still reads.
        let f = Payload::parse_typed(
            Encoding::Multipart,
            Some("application/x-www-form-urlencoded"),
            b"a=1",
        )
        .unwrap();
        assert_eq!(f.get("a").as_deref(), Some("1"));
    }
}
