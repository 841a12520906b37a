//! The message a Direct delivery carries, before sealing: RFC 5322 with CRLF line ends,
//! `From` our Direct address, `To` the recipient, a `Message-ID` under our domain made from the
//! delivery id (so a retried attempt is the same message), and the MDN request headers of the
//! Implementation Guide for Delivery Notification in Direct v1.0. A body that is an XML
//! document (a C-CDA) travels as an attachment next to a short text part.

use base64::Engine;

use crate::direct::mime::append_base64_folded;

/// The MDN request headers (outer and inner): processed and dispatched notifications to us.
pub fn notification_headers(from: &str) -> String {
    format!(
        "Disposition-Notification-To: <{from}>\r\n\
         Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n"
    )
}

/// A header value on one line (no CR/LF, which would inject headers).
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// RFC 2047 encoding for a non-ASCII subject.
fn subject_header(subject: &str) -> String {
    let subject = one_line(subject);
    if subject.is_ascii() {
        subject
    } else {
        format!(
            "=?utf-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(subject.as_bytes())
        )
    }
}

/// Whether the body is an XML document to attach rather than text.
fn is_document(body: &str) -> bool {
    let start = body.trim_start_matches('\u{feff}').trim_start();
    start.starts_with("<?xml") || start.starts_with("<ClinicalDocument")
}

/// Builds the message. `message_id` is without angle brackets.
pub fn inner_message(
    from: &str,
    to: &str,
    message_id: &str,
    subject: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let mut out = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nDate: {}\r\nMessage-ID: <{message_id}>\r\n\
         Subject: {}\r\n{}MIME-Version: 1.0\r\n",
        chrono::Utc::now().to_rfc2822(),
        subject_header(subject.unwrap_or("Direct message")),
        notification_headers(from),
    )
    .into_bytes();
    if is_document(body) {
        let boundary = format!("=_sb_{}", message_id.replace(['@', '.'], "_"));
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
                 --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
                 A clinical document is attached.\r\n\
                 --{boundary}\r\nContent-Type: application/xml; name=\"document.xml\"\r\n\
                 Content-Disposition: attachment; filename=\"document.xml\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n"
            )
            .as_bytes(),
        );
        append_base64_folded(&mut out, body.as_bytes());
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    } else {
        out.extend_from_slice(
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        append_base64_folded(&mut out, body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_attachment() {
        let m = inner_message(
            "a@direct.example",
            "b@direct.example",
            "d1@direct.example",
            Some("Referral\r\nBcc: x@y"),
            "<?xml version=\"1.0\"?><ClinicalDocument/>",
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(&m)
            .expect("parses");
        assert_eq!(parsed.message_id(), Some("d1@direct.example"));
        assert!(parsed.header("Bcc").is_none());
        assert!(
            parsed
                .header_raw("Disposition-Notification-Options")
                .is_some_and(|v| v.contains("X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"))
        );
        assert_eq!(parsed.attachment_count(), 1);
    }
}
