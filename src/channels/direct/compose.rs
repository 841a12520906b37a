//! The message a Direct delivery carries, before sealing: RFC 5322 with CRLF line ends,
//! `From` our Direct address, `To` the recipient, a `Message-ID` under our domain made from the
//! delivery id (so a retried attempt is the same message), and the MDN request headers of the
//! Implementation Guide for Delivery Notification in Direct v1.0. A body that is a C-CDA
//! (recognised by its content: a `ClinicalDocument` root in the HL7 v3 namespace,
//! `switchboard_docs::ccda::is_ccda`) travels as an attachment next to a short text part.
//! The message's attachments are further parts of the same `multipart/mixed` (the entity that
//! is then signed); a C-CDA among them is sent as `application/xml` whatever was declared.

use base64::Engine;

use crate::channels::Attachment;
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

/// Whether the body is a C-CDA to attach rather than text.
fn is_document(body: &str) -> bool {
    switchboard_docs::ccda::is_ccda(body.as_bytes())
}

/// A `name="…"` / `filename="…"` parameter value: ASCII, no quotes, backslashes or line
/// breaks (the stored name is already without paths and control characters).
fn quoted_name(filename: &str) -> String {
    filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One attachment part (base64) after `--boundary`.
fn attachment_part(out: &mut Vec<u8>, boundary: &str, attachment: &Attachment) {
    let content_type = if switchboard_docs::ccda::is_ccda(&attachment.data) {
        "application/xml"
    } else {
        attachment.content_type.as_str()
    };
    let name = quoted_name(&attachment.filename);
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: {content_type}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        )
        .as_bytes(),
    );
    append_base64_folded(out, &attachment.data);
}

/// Builds the message. `message_id` is without angle brackets.
pub fn inner_message(
    from: &str,
    to: &str,
    message_id: &str,
    subject: Option<&str>,
    body: &str,
    attachments: &[Attachment],
) -> Vec<u8> {
    let mut out = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nDate: {}\r\nMessage-ID: <{message_id}>\r\n\
         Subject: {}\r\n{}MIME-Version: 1.0\r\n",
        chrono::Utc::now().to_rfc2822(),
        subject_header(subject.unwrap_or("Direct message")),
        notification_headers(from),
    )
    .into_bytes();
    let document = is_document(body);
    if document || !attachments.is_empty() {
        let boundary = format!("=_sb_{}", message_id.replace(['@', '.'], "_"));
        out.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").as_bytes(),
        );
        if document {
            out.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
                     A clinical document is attached.\r\n"
                )
                .as_bytes(),
            );
            attachment_part(
                &mut out,
                &boundary,
                &Attachment {
                    filename: "document.xml".into(),
                    content_type: "application/xml".into(),
                    data: bytes::Bytes::copy_from_slice(body.as_bytes()),
                },
            );
        } else {
            out.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n"
                )
                .as_bytes(),
            );
            append_base64_folded(&mut out, body.as_bytes());
        }
        for attachment in attachments {
            attachment_part(&mut out, &boundary, attachment);
        }
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
            "<?xml version=\"1.0\"?><ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>",
            &[],
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

#[cfg(test)]
mod attachment_tests {
    use super::*;
    use mail_parser::MimeHeaders;

    fn parse(m: &[u8]) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(m)
            .expect("parses")
    }

    /// An XML declaration alone is not a C-CDA: such a body stays text.
    #[test]
    fn a_body_is_a_document_by_its_content_not_its_declaration() {
        let m = inner_message(
            "a@d.example",
            "b@d.example",
            "x@d.example",
            None,
            "<?xml version=\"1.0\"?><note>not a C-CDA</note>",
            &[],
        );
        assert_eq!(parse(&m).attachment_count(), 0);
    }

    #[test]
    fn attachments_are_parts_and_a_ccda_goes_as_xml() {
        let ccda =
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><id root=\"1\"/></ClinicalDocument>";
        let attachments = [
            Attachment {
                filename: "scan \"1\".pdf".into(),
                content_type: "application/pdf".into(),
                data: bytes::Bytes::from_static(b"%PDF-1.7 bytes"),
            },
            Attachment {
                filename: "summary.xml".into(),
                content_type: "text/plain".into(),
                data: bytes::Bytes::from_static(ccda),
            },
        ];
        let m = inner_message(
            "a@d.example",
            "b@d.example",
            "x@d.example",
            Some("S"),
            "See attached",
            &attachments,
        );
        let parsed = parse(&m);
        assert_eq!(parsed.attachment_count(), 2);
        let pdf = parsed.attachment(0).expect("pdf");
        assert_eq!(pdf.contents(), b"%PDF-1.7 bytes");
        assert_eq!(pdf.attachment_name(), Some("scan _1_.pdf"));
        let xml = parsed.attachment(1).expect("xml");
        assert_eq!(xml.contents(), ccda);
        let ct = xml.content_type().expect("type");
        assert_eq!((ct.ctype(), ct.subtype()), ("application", Some("xml")));
        assert_eq!(parsed.body_text(0).as_deref(), Some("See attached"));
    }
}
