//! Byte-level MIME helpers shared by `smime` and `mdn`.
//!
//! Owns: line-ending normalisation, header/body splitting, base64 line
//! folding, transfer-decoding (base64, quoted-printable), boundaries, and
//! copying selected raw header fields. It does not interpret S/MIME or
//! reports; those live in `smime` and `mdn`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{Message, MimeHeaders};

/// Converts bare LF (and bare CR) line ends to CRLF; CRLF stays as is.
pub(super) fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Index of the first byte of the body (after the blank line), or `None`
/// when the entity has no header/body separator.
pub(super) fn body_start(entity: &[u8]) -> Option<usize> {
    let crlf = find(entity, b"\r\n\r\n").map(|i| i + 4);
    let lf = find(entity, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Base64 with CRLF every 76 characters and a final CRLF.
pub(super) fn base64_folded(data: &[u8]) -> Vec<u8> {
    let text = STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 38 + 2);
    for chunk in text.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Base64 decoding that ignores whitespace and line breaks.
pub(super) fn base64_decode(data: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD.decode(clean).ok()
}

/// Quoted-printable decoding (RFC 2045 §6.7), lenient about malformed escapes.
pub(super) fn qp_decode(data: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'=' {
            match (data.get(i + 1), data.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&h), Some(&l)) => {
                    if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// Decodes `body` according to a Content-Transfer-Encoding value.
pub(super) fn transfer_decode(cte: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    match cte.map(|c| c.trim().to_ascii_lowercase()).as_deref() {
        Some("base64") => base64_decode(body),
        Some("quoted-printable") => Some(qp_decode(body)),
        _ => Some(body.to_vec()),
    }
}

/// A random multipart boundary that does not occur in `content`.
pub(super) fn boundary(content: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    loop {
        let mut buf = [0u8; 18];
        openssl::rand::rand_bytes(&mut buf)?;
        let b = format!("----=_direct_{}", hex_string(&buf));
        if find(content, b.as_bytes()).is_none() {
            return Ok(b);
        }
    }
}

pub(super) fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The raw header lines (name, colon, value, folding and line end) of the
/// top-level fields of `msg` whose name satisfies `keep`, in message order.
pub(super) fn raw_header_lines(msg: &Message<'_>, keep: impl Fn(&str) -> bool) -> Vec<u8> {
    let raw = msg.raw_message();
    let mut out = Vec::new();
    for h in msg.headers() {
        if keep(h.name.as_str()) {
            let (s, e) = (h.offset_field as usize, h.offset_end as usize);
            if let Some(line) = raw.get(s..e) {
                out.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    to_crlf(&out)
}

/// `type/subtype` of the root part, lowercased; `text/plain` when absent.
pub(super) fn mime_type(msg: &Message<'_>) -> String {
    match msg.content_type() {
        Some(ct) => {
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase()
        }
        None => "text/plain".into(),
    }
}

/// A content-type parameter of the root part.
pub(super) fn ct_param<'a>(msg: &'a Message<'_>, name: &str) -> Option<&'a str> {
    msg.content_type().and_then(|ct| ct.attribute(name))
}

/// The Content-Transfer-Encoding of the root part.
pub(super) fn root_cte<'a>(msg: &'a Message<'_>) -> Option<&'a str> {
    msg.content_transfer_encoding()
}

/// True when the message has a header named `name` (any case).
pub(super) fn has_header(msg: &Message<'_>, name: &str) -> bool {
    msg.headers()
        .iter()
        .any(|h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// The first address in the From header, lowercased.
pub(super) fn from_address(msg: &Message<'_>) -> Option<String> {
    msg.from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.to_ascii_lowercase())
}
