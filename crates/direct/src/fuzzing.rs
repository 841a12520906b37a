//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from the docs, may change
//! at any time). They reach the MIME and S/MIME-unwrapping helpers that are private to
//! `direct`, so the fuzzer exercises the code `open` runs after decryption without having to
//! forge an envelope first.

use super::smime::DirectError;
use super::{mime, open};

/// `data` as base64 lines of 76 characters with CRLF (how sealed parts are written).
pub fn base64_folded(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    mime::append_base64_folded(&mut out, data);
    out
}

/// Bare LF and bare CR line ends turned into CRLF.
pub fn to_crlf(input: &[u8]) -> Vec<u8> {
    mime::to_crlf(input).into_owned()
}

/// Where the body starts (after the first blank line).
pub fn body_start(entity: &[u8]) -> Option<usize> {
    mime::body_start(entity)
}

/// Base64 (whitespace ignored), quoted-printable or identity, by Content-Transfer-Encoding.
pub fn transfer_decode(cte: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    mime::transfer_decode(cte, body)
}

/// A decrypted entity split into (signed bytes, signature DER, detached?).
pub fn split_signed(entity: &[u8]) -> Result<(Vec<u8>, Vec<u8>, bool), DirectError> {
    open::split_signed(entity)
}

/// The original message of a signed entity, with `outer` as the envelope's headers.
pub fn unwrap(entity: &[u8], outer: &[u8]) -> Result<(Vec<u8>, bool), DirectError> {
    let outer = switchboard_mail::parse_message(outer)
        .ok_or(DirectError::Malformed("message does not parse"))?;
    open::unwrap(entity, &outer)
}

/// What `open` reads of a message's headers: MIME type, `smime-type`, transfer encoding,
/// From address and the non-MIME header lines. `None` when it does not parse.
pub fn headers(raw: &[u8]) -> Option<Headers> {
    let msg = switchboard_mail::parse_message(raw)?;
    Some(Headers {
        mime_type: mime::mime_type(&msg),
        smime_type: mime::ct_param(&msg, "smime-type").map(str::to_string),
        cte: mime::root_cte(&msg).map(str::to_string),
        from: mime::from_address(&msg),
        has_message_id: mime::has_header(&msg, "message-id"),
        other_lines: mime::raw_header_lines(&msg, |n| {
            !n.to_ascii_lowercase().starts_with("content-")
        }),
    })
}

/// See [`headers`].
#[derive(Debug)]
pub struct Headers {
    pub mime_type: String,
    pub smime_type: Option<String>,
    pub cte: Option<String>,
    pub from: Option<String>,
    pub has_message_id: bool,
    pub other_lines: Vec<u8>,
}
