//! Byte-level MIME helpers shared by `smime` and `mdn`.
//!
//! Owns: line-ending normalisation, header/body splitting, base64 line
//! folding, transfer-decoding (base64, quoted-printable), boundaries, and
//! copying selected raw header fields. It does not interpret S/MIME or
//! reports; those live in `smime` and `mdn`.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{Message, MimeHeaders};

/// Whether a message's top-level content is S/MIME enveloped data
/// (`application/pkcs7-mime` or the older `application/x-pkcs7-mime`): a Direct message or
/// notification that security processing must open first.
pub fn is_pkcs7_mime(raw: &[u8]) -> bool {
    crate::parse_message(raw).is_some_and(|m| {
        m.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("application")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("pkcs7-mime") || s.eq_ignore_ascii_case("x-pkcs7-mime")
                })
        })
    })
}

/// Converts bare LF (and bare CR) line ends to CRLF; CRLF stays as is.
///
/// Input that already uses CRLF throughout (the usual case: we compose with
/// CRLF) is returned borrowed, after one vectorised scan.
pub fn to_crlf(input: &[u8]) -> Cow<'_, [u8]> {
    if is_crlf(input) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut copied = 0;
    let mut skip_lf_at = None;
    for i in memchr::memchr2_iter(b'\r', b'\n', input) {
        if skip_lf_at == Some(i) {
            copied = i + 1;
            continue;
        }
        out.extend_from_slice(&input[copied..i]);
        out.extend_from_slice(b"\r\n");
        copied = i + 1;
        if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
            skip_lf_at = Some(i + 1);
        }
    }
    out.extend_from_slice(&input[copied..]);
    Cow::Owned(out)
}

/// True when every CR in `input` is followed by LF and every LF preceded by CR.
fn is_crlf(input: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', input).all(|i| match input[i] {
        b'\r' => input.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && input[i - 1] == b'\r',
    })
}

/// Index of the first byte of the body (after the blank line), or `None`
/// when the entity has no header/body separator.
pub fn body_start(entity: &[u8]) -> Option<usize> {
    let crlf = find(entity, b"\r\n\r\n").map(|i| i + 4);
    let lf = find(entity, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// Input bytes per 76-character base64 line.
const BASE64_LINE_INPUT: usize = 57;
/// Characters per base64 line (RFC 2045 allows at most 76).
const BASE64_LINE: usize = 76;
/// Lines encoded per block into a stack buffer before being folded into the output.
const BASE64_BLOCK_LINES: usize = 64;

/// Appends `data` as base64 with CRLF every 76 characters and a final CRLF.
///
/// Encodes whole blocks of lines at a time with the vectorised encoder into a
/// stack buffer (a block is a whole number of lines, so only the last block
/// pads), then copies the block's lines into `out` with their line ends.
pub fn append_base64_folded(out: &mut Vec<u8>, data: &[u8]) {
    let lines = data.len().div_ceil(BASE64_LINE_INPUT);
    out.reserve(lines * (BASE64_LINE + 2));
    let mut block = [0u8; BASE64_LINE * BASE64_BLOCK_LINES];
    for chunk in data.chunks(BASE64_LINE_INPUT * BASE64_BLOCK_LINES) {
        // A chunk of at most BLOCK_LINES * 57 bytes encodes to at most the block's size.
        let text = base64_simd::STANDARD.encode(chunk, base64_simd::Out::from_slice(&mut block));
        for line in text.chunks(BASE64_LINE) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Base64 decoding that ignores whitespace and line breaks.
pub fn base64_decode(data: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD.decode(clean).ok()
}

/// Quoted-printable decoding (RFC 2045 §6.7), lenient about malformed escapes.
pub fn qp_decode(data: &[u8]) -> Vec<u8> {
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
pub fn transfer_decode(cte: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    match cte.map(|c| c.trim().to_ascii_lowercase()).as_deref() {
        Some("base64") => base64_decode(body),
        Some("quoted-printable") => Some(qp_decode(body)),
        _ => Some(body.to_vec()),
    }
}

/// The fixed start of every boundary we make.
const BOUNDARY_PREFIX: &str = "----=_direct_";

/// A random multipart boundary that does not occur in `content`.
///
/// `content` is searched once for the fixed prefix; only when it occurs (a
/// message that already carries one of our boundaries) is each candidate
/// searched for in full.
pub fn boundary(content: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let prefix_seen = find(content, BOUNDARY_PREFIX.as_bytes()).is_some();
    loop {
        let mut buf = [0u8; 18];
        openssl::rand::rand_bytes(&mut buf)?;
        let b = format!("{BOUNDARY_PREFIX}{}", hex_string(&buf));
        if !prefix_seen || find(content, b.as_bytes()).is_none() {
            return Ok(b);
        }
    }
}

pub fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The raw header lines (name, colon, value, folding and line end) of the
/// top-level fields of `msg` whose name satisfies `keep`, in message order.
pub fn raw_header_lines(msg: &Message<'_>, keep: impl Fn(&str) -> bool) -> Vec<u8> {
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
    if is_crlf(&out) {
        out
    } else {
        to_crlf(&out).into_owned()
    }
}

/// `type/subtype` of the root part, lowercased; `text/plain` when absent.
pub fn mime_type(msg: &Message<'_>) -> String {
    match msg.content_type() {
        Some(ct) => {
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase()
        }
        None => "text/plain".into(),
    }
}

/// A content-type parameter of the root part.
pub fn ct_param<'a>(msg: &'a Message<'_>, name: &str) -> Option<&'a str> {
    msg.content_type().and_then(|ct| ct.attribute(name))
}

/// The Content-Transfer-Encoding of the root part.
pub fn root_cte<'a>(msg: &'a Message<'_>) -> Option<&'a str> {
    msg.content_transfer_encoding()
}

/// True when the message has a header named `name` (any case).
pub fn has_header(msg: &Message<'_>, name: &str) -> bool {
    msg.headers()
        .iter()
        .any(|h| h.name.as_str().eq_ignore_ascii_case(name))
}

/// The first address in the From header, lowercased.
pub fn from_address(msg: &Message<'_>) -> Option<String> {
    msg.from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enveloped_data_is_told_from_the_rest() {
        let enveloped = b"From: a@b.example\r\nContent-Type: Application/PKCS7-MIME; smime-type=enveloped-data\r\n\r\nMIIB\r\n";
        let old_name = b"Content-Type: application/x-pkcs7-mime\r\n\r\nMIIB\r\n";
        let signed =
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\r\n\r\n";
        assert!(is_pkcs7_mime(enveloped));
        assert!(is_pkcs7_mime(old_name));
        assert!(!is_pkcs7_mime(signed));
        assert!(!is_pkcs7_mime(b"no header at all"));
    }

    #[test]
    fn crlf_is_borrowed_when_already_crlf() {
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert!(matches!(to_crlf(b"no line end"), Cow::Borrowed(_)));
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        assert_eq!(
            &*to_crlf(b"a\nb\rc\r\nd\n\re"),
            b"a\r\nb\r\nc\r\nd\r\n\r\ne"
        );
        assert_eq!(&*to_crlf(b"\n"), b"\r\n");
        assert_eq!(&*to_crlf(b"\r"), b"\r\n");
        assert_eq!(&*to_crlf(b"\r\r\n\n"), b"\r\n\r\n\r\n");
    }

    #[test]
    fn base64_folds_at_76() {
        for len in [
            1,
            56,
            57,
            58,
            200,
            57 * 64 - 1,
            57 * 64,
            57 * 64 + 1,
            10_000,
        ] {
            let data: Vec<u8> = (0..=255u8).cycle().take(len).collect();
            let mut out = b"x".to_vec();
            append_base64_folded(&mut out, &data);
            let text = std::str::from_utf8(&out[1..]).expect("ascii");
            assert!(text.ends_with("\r\n"));
            let lines: Vec<&str> = text.split_terminator("\r\n").collect();
            let (last, full) = lines.split_last().expect("one line at least");
            assert!(full.iter().all(|l| l.len() == 76), "{len}");
            assert!(!last.is_empty() && last.len() <= 76, "{len}");
            assert_eq!(STANDARD.encode(&data), lines.concat(), "{len}");
        }
        let mut empty = Vec::new();
        append_base64_folded(&mut empty, b"");
        assert!(empty.is_empty());
    }

    #[test]
    fn boundary_avoids_content() -> Result<(), openssl::error::ErrorStack> {
        let b = boundary(b"plain")?;
        assert!(b.starts_with(BOUNDARY_PREFIX));
        let content = format!("x{b}y");
        assert_ne!(boundary(content.as_bytes())?, b);
        Ok(())
    }
}
