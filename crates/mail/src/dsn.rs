//! Bounces: recognizing a delivery status notification (RFC 3464 `multipart/report;
//! report-type=delivery-status`) that reports a failure, and finding which delivery it is
//! about. The report fields are read by `direct::mdn` (shared with Direct); this file adds what
//! identifies our deliveries:
//!
//! 1. VERP: the DSN is addressed to the return path `<local>+<reference>@<domain>`, so the
//!    DSN's own `To`/`Delivered-To`/`X-Original-To`/`Envelope-To` (or the returned original's
//!    `Return-Path`) carry the delivery's reference token;
//! 2. else the returned original's `Message-ID: <reference@domain>`.
//!
//! A reference is the keyed token of a delivery id (`Keyring::delivery_token`), never the id:
//! whoever can write to the bounce mailbox cannot name a delivery they were not sent. The
//! caller resolves references and applies a bounce only to a `sent` delivery of the connector
//! whose mailbox it came from. Anything that is not a DSN with a failed action is `None`: the
//! caller leaves it alone.

use mail_parser::{MimeHeaders, PartType};

use crate::mdn::{NotificationKind, Outcome, parse_notifications};

/// A failure report about one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// Reference tokens found in VERP addresses, in the order above (usually one).
    pub verp_ids: Vec<String>,
    /// The returned original's `Message-ID`, without angle brackets.
    pub original_message_id: Option<String>,
    /// `Diagnostic-Code`, else `Status`, of the first failed recipient, addresses redacted.
    pub reason: String,
}

impl Bounce {
    /// Candidate reference tokens, best first: VERP references, then the Message-ID's local
    /// part when its domain is `domain` (our Message-ID domain).
    pub fn candidates(&self, domain: &str) -> Vec<String> {
        let mut out = self.verp_ids.clone();
        if let Some(id) = &self.original_message_id
            && let Some((local, host)) = id.rsplit_once('@')
            && host.eq_ignore_ascii_case(domain)
            && is_reference(local)
            && !out.iter().any(|o| o == local)
        {
            out.push(local.to_string());
        }
        out
    }
}

/// Parses `raw`; `None` when it is not a DSN reporting a failed delivery.
pub fn parse_bounce(raw: &[u8]) -> Option<Bounce> {
    let notifications = parse_notifications(raw).ok()?;
    let (failed, original_message_id) = notifications.iter().find_map(|n| match &n.outcome {
        Outcome::Failed { reason } if n.kind == NotificationKind::Dsn => {
            let reason = if reason.trim().is_empty() {
                n.status.clone().unwrap_or_else(|| "failed".into())
            } else {
                reason.clone()
            };
            Some((reason, n.original_message_id.clone()))
        }
        _ => None,
    })?;
    let msg = crate::parse_message(raw)?;
    let raw_msg = msg.raw_message();
    let mut verp_ids = Vec::new();
    let top = raw_msg
        .get(..msg.root_part().raw_body_offset() as usize)
        .unwrap_or_default();
    for value in header_values(
        top,
        &[
            "to",
            "delivered-to",
            "x-original-to",
            "envelope-to",
            "x-envelope-to",
        ],
    ) {
        push_verp_ids(&value, &mut verp_ids);
    }
    for &child in msg.root_part().sub_parts().unwrap_or_default() {
        let Some(part) = msg.parts.get(child as usize) else {
            continue;
        };
        let returned = matches!(part.body, PartType::Message(_))
            || part.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("text")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
            });
        if !returned {
            continue;
        }
        let body = raw_msg
            .get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)
            .unwrap_or_default();
        for value in header_values(body, &["return-path"]) {
            push_verp_ids(&value, &mut verp_ids);
        }
    }
    Some(Bounce {
        verp_ids,
        original_message_id,
        reason: crate::redact_addresses(&failed),
    })
}

/// Whether `id` looks like one of our delivery reference tokens (`r` + 26 lowercase
/// Crockford base32 characters).
pub fn is_reference(id: &str) -> bool {
    id.len() == 27
        && id.starts_with('r')
        && id[1..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Adds the reference tokens of every `+<token>@` found in `value`.
fn push_verp_ids(value: &str, out: &mut Vec<String>) {
    let mut rest = value;
    while let Some(plus) = rest.find('+') {
        let after = &rest[plus + 1..];
        if let Some(at) = after.find('@') {
            let id = after[..at].to_ascii_lowercase();
            if is_reference(&id) && !out.contains(&id) {
                out.push(id);
            }
        }
        rest = after;
    }
}

/// Unfolded values of the named header fields (lowercase names) in a header block; stops at
/// the first empty line.
fn header_values(block: &[u8], names: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(block);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    fields
        .into_iter()
        .filter(|(name, _)| names.contains(&name.as_str()))
        .map(|(_, value)| value)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn dsn(to: &str, original: &str) -> String {
        format!(
            "From: MAILER-DAEMON@mx.example.org\r\n\
             To: {to}\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             Message-ID: <dsn-1@mx.example.org>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\
             \r\n\
             --b1\r\n\
             Content-Type: text/plain\r\n\
             \r\n\
             Your message could not be delivered.\r\n\
             --b1\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; mx.example.org\r\n\
             \r\n\
             Final-Recipient: rfc822; patient@example.org\r\n\
             Action: failed\r\n\
             Status: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\
             \r\n\
             --b1\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n\
             {original}\
             --b1--\r\n"
        )
    }

    const ID: &str = "r7zk3m1q9d8x0v6c2n4b5h7j9tw";

    #[test]
    fn finds_the_delivery_by_verp() {
        let raw = dsn(
            &format!("bounces+{ID}@mail.clinic.example"),
            "Message-ID: <other@elsewhere.example>\r\nSubject: x\r\n",
        );
        let bounce = parse_bounce(raw.as_bytes()).expect("a bounce");
        assert_eq!(bounce.verp_ids, vec![ID.to_string()]);
        assert_eq!(bounce.reason, "smtp; 550 5.1.1 User unknown");
        assert_eq!(
            bounce.candidates("mail.clinic.example"),
            vec![ID.to_string()]
        );
    }

    #[test]
    fn falls_back_to_the_returned_message_id() {
        let raw = dsn(
            "bounces@mail.clinic.example",
            &format!("Message-ID: <{ID}@mail.clinic.example>\r\nSubject: x\r\n"),
        );
        let bounce = parse_bounce(raw.as_bytes()).expect("a bounce");
        assert!(bounce.verp_ids.is_empty());
        assert_eq!(
            bounce.candidates("mail.clinic.example"),
            vec![ID.to_string()]
        );
        assert!(bounce.candidates("other.example").is_empty());
    }

    #[test]
    fn the_status_stands_in_for_a_missing_diagnostic_code() {
        let raw = dsn("bounces@x.example", "Message-ID: <a@b>\r\n")
            .replace("Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n", "");
        let bounce = parse_bounce(raw.as_bytes()).expect("a bounce");
        assert_eq!(bounce.reason, "5.1.1");
    }

    #[test]
    fn delayed_reports_and_plain_mail_are_not_bounces() {
        let delayed = dsn("bounces@x.example", "Message-ID: <a@b>\r\n")
            .replace("Action: failed", "Action: delayed");
        assert_eq!(parse_bounce(delayed.as_bytes()), None);
        let plain = "From: a@b.example\r\nTo: bounces@x.example\r\nSubject: hi\r\n\r\nHello\r\n";
        assert_eq!(parse_bounce(plain.as_bytes()), None);
        assert_eq!(parse_bounce(b""), None);
    }

    #[test]
    fn the_reference_implementation_dsn_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/direct/ri-DSNMessage.txt"
        );
        let Ok(raw) = std::fs::read(path) else {
            return;
        };
        let bounce = parse_bounce(&raw).expect("the RI DSN is a failure report");
        assert!(!bounce.reason.is_empty());
    }

    #[test]
    fn references_are_strict() {
        assert!(is_reference(ID));
        assert!(!is_reference("r"));
        // A raw delivery id is not a reference: bounces naming ids are not ours to apply.
        assert!(!is_reference("dlv_01jx0000000000000000000000"));
        assert!(!is_reference("r../x"));
        assert!(!is_reference(&format!("{ID}0")));
    }

    #[test]
    fn a_dsn_naming_a_raw_delivery_id_has_no_candidates() {
        let id = "dlv_01jx0000000000000000000000";
        let raw = dsn(
            &format!("bounces+{id}@mail.clinic.example"),
            &format!("Message-ID: <{id}@mail.clinic.example>\r\n"),
        );
        let bounce = parse_bounce(raw.as_bytes()).expect("a bounce");
        assert!(bounce.candidates("mail.clinic.example").is_empty());
    }
}
