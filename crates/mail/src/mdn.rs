//! Direct delivery notifications: parsing MDNs (RFC 3798/8098) and DSNs
//! (RFC 3464) into [`Notification`]s, and building the processed, dispatched
//! or failed MDN a receiving HISP sends back (Implementation Guide for Delivery
//! Notification in Direct v1.0).
//!
//! Owns: the `multipart/report` formats and the `X-DIRECT-FINAL-DESTINATION-DELIVERY`
//! extension. Does not own: signing/encrypting the MDN (pass the built bytes
//! to `smime::seal`), deciding when to send one, or tracking state.
//!
//! Message IDs are returned without angle brackets; recipient addresses are
//! returned without the `rfc822;` address type and lowercased.

use mail_parser::MimeHeaders;

use crate::mime;

/// Errors parsing or building a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdnError {
    #[error("message does not parse")]
    Malformed,
    #[error("not a multipart/report disposition-notification or delivery-status")]
    NotAReport,
    #[error("report has no {0} part")]
    MissingPart(&'static str),
    #[error("report lacks the {0} field")]
    MissingField(&'static str),
    #[error("unknown {field} value")]
    UnknownValue { field: &'static str },
    #[error("{0} must not contain line breaks or be empty")]
    InvalidField(&'static str),
}

/// Whether a notification came from the receiving HISP (MDN) or an MTA (DSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    Mdn,
    Dsn,
}

/// What the notification says happened to the original message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// MDN `processed`: the receiving HISP accepted and will deliver it.
    Processed,
    /// MDN `dispatched` (or `displayed`): delivered to the recipient's system.
    Dispatched,
    /// MDN failed/denied/deleted/error, or DSN `Action: failed`.
    Failed { reason: String },
    /// DSN `Action: delayed`.
    Delayed,
    /// DSN `Action: delivered` (also `relayed`, `expanded`).
    Delivered,
}

/// One parsed delivery notification (per final recipient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub kind: NotificationKind,
    /// Message-ID of the message being reported on, without angle brackets.
    pub original_message_id: Option<String>,
    /// The final recipient, lowercased, without `rfc822;`.
    pub final_recipient: Option<String>,
    pub outcome: Outcome,
    /// MDN: the `X-DIRECT-FINAL-DESTINATION-DELIVERY` extension field was present.
    pub final_destination_delivery: bool,
    /// DSN: the `Status` field (e.g. `5.0.0`).
    pub status: Option<String>,
}

/// Header-style fields of a report part, in groups separated by blank lines.
/// Names are lowercased; values are unfolded and trimmed.
fn field_groups(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(body);
    let mut groups: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
            }
            continue;
        }
        let Some(group) = groups.last_mut() else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = group.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn strip_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// `rfc822; User@Example.com` → `user@example.com`.
fn recipient(value: &str) -> String {
    let addr = match value.split_once(';') {
        Some((_, a)) => a,
        None => value,
    };
    addr.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

/// Parses the first notification in `raw` (an MDN's only one, or a DSN's first recipient).
pub fn parse_notification(raw: &[u8]) -> Result<Notification, MdnError> {
    parse_notifications(raw)?
        .into_iter()
        .next()
        .ok_or(MdnError::MissingField("Final-Recipient"))
}

/// Parses an MDN or DSN; a DSN yields one notification per recipient group.
pub fn parse_notifications(raw: &[u8]) -> Result<Vec<Notification>, MdnError> {
    let msg = crate::parse_message(raw).ok_or(MdnError::Malformed)?;
    if mime::mime_type(&msg) != "multipart/report" {
        return Err(MdnError::NotAReport);
    }
    let report_type = mime::ct_param(&msg, "report-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (wanted, kind) = match report_type.as_str() {
        "disposition-notification" => ("message/disposition-notification", NotificationKind::Mdn),
        "delivery-status" => ("message/delivery-status", NotificationKind::Dsn),
        _ => return Err(MdnError::NotAReport),
    };
    let children = msg.root_part().sub_parts().unwrap_or_default();
    let raw_msg = msg.raw_message();
    let mut report = None;
    let mut returned_id = None;
    for &c in children {
        let Some(part) = msg.parts.get(c as usize) else {
            continue;
        };
        let ctype = part
            .content_type()
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let body = raw_msg
            .get(part.raw_body_offset() as usize..part.raw_end_offset() as usize)
            .unwrap_or_default();
        if ctype == wanted {
            let decoded = mime::transfer_decode(part.content_transfer_encoding(), body)
                .unwrap_or_else(|| body.to_vec());
            report = Some(decoded);
        } else if ctype == "message/rfc822" || ctype == "text/rfc822-headers" {
            let mut headers = body.to_vec();
            headers.extend_from_slice(b"\r\n\r\n");
            returned_id = crate::parse_message(&headers).and_then(|m| m.message_id().map(strip_id));
        }
    }
    let report = report.ok_or(MdnError::MissingPart(wanted))?;
    let groups = field_groups(&report);
    match kind {
        NotificationKind::Mdn => parse_mdn(&groups).map(|n| vec![n]),
        NotificationKind::Dsn => parse_dsn(&groups, returned_id),
    }
}

fn parse_mdn(groups: &[Vec<(String, String)>]) -> Result<Notification, MdnError> {
    let all: Vec<(String, String)> = groups.iter().flatten().cloned().collect();
    let disposition = field(&all, "disposition").ok_or(MdnError::MissingField("Disposition"))?;
    // automatic-action/MDN-sent-automatically; processed[/modifier]
    let dtype = disposition
        .rsplit_once(';')
        .map(|(_, t)| t)
        .unwrap_or(disposition)
        .trim()
        .to_ascii_lowercase();
    let (base, modifier) = match dtype.split_once('/') {
        Some((b, m)) => (b.trim().to_string(), Some(m.trim().to_string())),
        None => (dtype.clone(), None),
    };
    let outcome = match base.as_str() {
        "processed" => Outcome::Processed,
        "dispatched" | "displayed" => Outcome::Dispatched,
        "failed" | "denied" | "deleted" | "error" => {
            let detail = field(&all, "failure")
                .or_else(|| field(&all, "error"))
                .map(str::to_string)
                .or(modifier);
            Outcome::Failed {
                reason: match detail {
                    Some(d) => format!("{base}: {d}"),
                    None => base.clone(),
                },
            }
        }
        _ => {
            return Err(MdnError::UnknownValue {
                field: "Disposition",
            });
        }
    };
    Ok(Notification {
        kind: NotificationKind::Mdn,
        original_message_id: field(&all, "original-message-id").map(strip_id),
        final_recipient: field(&all, "final-recipient").map(recipient),
        outcome,
        final_destination_delivery: field(&all, "x-direct-final-destination-delivery").is_some(),
        status: None,
    })
}

fn parse_dsn(
    groups: &[Vec<(String, String)>],
    returned_id: Option<String>,
) -> Result<Vec<Notification>, MdnError> {
    let (per_message, recipients) = groups
        .split_first()
        .ok_or(MdnError::MissingField("Action"))?;
    // Prefer the returned headers; fall back to a per-message field some MTAs add.
    let original_id = returned_id.or_else(|| {
        per_message
            .iter()
            .find(|(n, _)| n.ends_with("original-message-id"))
            .map(|(_, v)| strip_id(v))
    });
    let mut out = Vec::new();
    for r in recipients {
        let action = field(r, "action")
            .ok_or(MdnError::MissingField("Action"))?
            .to_ascii_lowercase();
        let status = field(r, "status").map(str::to_string);
        let outcome = match action.as_str() {
            "failed" => Outcome::Failed {
                reason: field(r, "diagnostic-code")
                    .map(str::to_string)
                    .or_else(|| status.clone())
                    .unwrap_or_else(|| "failed".into()),
            },
            "delayed" => Outcome::Delayed,
            "delivered" | "relayed" | "expanded" => Outcome::Delivered,
            _ => return Err(MdnError::UnknownValue { field: "Action" }),
        };
        out.push(Notification {
            kind: NotificationKind::Dsn,
            original_message_id: original_id.clone(),
            final_recipient: field(r, "final-recipient").map(recipient),
            outcome,
            final_destination_delivery: false,
            status,
        });
    }
    if out.is_empty() {
        return Err(MdnError::MissingField("Action"));
    }
    Ok(out)
}

/// The disposition an outgoing MDN reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnDisposition {
    Processed,
    Dispatched,
    /// The message was accepted (a processed MDN may have gone) but could not be delivered to
    /// its final destination: `failed` with a `Failure:` field ([`FAILURE_TEXT`]), which, like
    /// the human-readable part, names nothing of the message's content.
    Failed,
}

/// The `Failure:` field of a failed MDN: the same sentence for every failure, so nothing of
/// the message, its patient or our filing leaks to the sender's system.
pub const FAILURE_TEXT: &str = "the message could not be delivered to its final destination";

/// What [`build_mdn`] needs. Addresses and IDs must be single-line.
#[derive(Debug, Clone)]
pub struct MdnRequest<'a> {
    /// Our address: the original message's recipient (MDN From and Final-Recipient).
    pub from: &'a str,
    /// The original sender (MDN To).
    pub to: &'a str,
    /// The Message-ID of the message being acknowledged (with or without brackets).
    pub original_message_id: &'a str,
    /// `Reporting-UA`, e.g. `gateway.example.org; Switchboard`.
    pub reporting_ua: &'a str,
    pub disposition: MdnDisposition,
    /// Add `X-DIRECT-FINAL-DESTINATION-DELIVERY` (for a dispatched MDN whose
    /// sender asked for it).
    pub final_destination_delivery: bool,
}

fn single_line(value: &str, name: &'static str) -> Result<(), MdnError> {
    if value.trim().is_empty() || value.contains(['\r', '\n']) {
        Err(MdnError::InvalidField(name))
    } else {
        Ok(())
    }
}

/// Builds an unsigned RFC 8098 MDN (CRLF line ends) to pass to `smime::seal`, with a fresh
/// random Message-ID under the domain of `from`.
/// The human-readable part and Subject carry no content of the original.
pub fn build_mdn(req: &MdnRequest<'_>) -> Result<Vec<u8>, MdnError> {
    let mut rnd = [0u8; 16];
    openssl::rand::rand_bytes(&mut rnd).map_err(|_| MdnError::Malformed)?;
    let domain = req
        .from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost");
    build_mdn_with_id(req, &format!("{}@{domain}", mime::hex_string(&rnd)))
}

/// [`build_mdn`] with the MDN's own Message-ID given (with or without brackets), so that an
/// MDN sent again after a failed attempt is the same message.
pub fn build_mdn_with_id(req: &MdnRequest<'_>, message_id: &str) -> Result<Vec<u8>, MdnError> {
    single_line(req.from, "from")?;
    single_line(req.to, "to")?;
    single_line(req.original_message_id, "original message id")?;
    single_line(req.reporting_ua, "reporting UA")?;
    single_line(message_id, "message id")?;
    let (word, text) = match req.disposition {
        MdnDisposition::Processed => ("processed", "Processed"),
        MdnDisposition::Dispatched => ("dispatched", "Dispatched"),
        MdnDisposition::Failed => ("failed", "Failed"),
    };
    let human = match req.disposition {
        MdnDisposition::Failed => {
            "Your message could not be delivered by the recipient's Direct system."
        }
        MdnDisposition::Processed => "Your message was processed by the recipient's Direct system.",
        MdnDisposition::Dispatched => {
            "Your message was dispatched by the recipient's Direct system."
        }
    };
    let mut rnd = [0u8; 8];
    openssl::rand::rand_bytes(&mut rnd).map_err(|_| MdnError::Malformed)?;
    let boundary = format!("----=_mdn_{}", mime::hex_string(&rnd));
    let own_id = strip_id(message_id);
    let orig = strip_id(req.original_message_id);
    let mut report = format!(
        "Reporting-UA: {}\r\nOriginal-Recipient: rfc822;{}\r\nFinal-Recipient: rfc822;{}\r\n\
         Original-Message-ID: <{orig}>\r\nDisposition: automatic-action/MDN-sent-automatically;{word}\r\n",
        req.reporting_ua, req.from, req.from
    );
    if req.disposition == MdnDisposition::Failed {
        report.push_str(&format!("Failure: {FAILURE_TEXT}\r\n"));
    }
    if req.final_destination_delivery {
        report.push_str("X-DIRECT-FINAL-DESTINATION-DELIVERY: \r\n");
    }
    let msg = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nDate: {date}\r\nMessage-ID: <{own_id}>\r\n\
         Subject: {text}: message {orig}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=disposition-notification;\r\n\
         \tboundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         {human}\r\n\
         --{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n\
         {report}\r\n--{boundary}--\r\n",
        from = req.from,
        to = req.to,
        date = chrono::Utc::now().to_rfc2822(),
    );
    Ok(msg.into_bytes())
}

/// Builds the processed MDN for a message we received and accepted:
/// `received` is the inner message (`Opened::inner`), `our_address` the
/// recipient address it was delivered to. The MDN goes to the message's From
/// address and names its Message-ID; seal it like any other Direct message.
pub fn processed_mdn_for(
    received: &[u8],
    our_address: &str,
    reporting_ua: &str,
) -> Result<Vec<u8>, MdnError> {
    let msg = crate::parse_message(received).ok_or(MdnError::Malformed)?;
    let id = msg
        .message_id()
        .ok_or(MdnError::MissingField("Message-ID"))?;
    let to = mime::from_address(&msg).ok_or(MdnError::MissingField("From"))?;
    build_mdn(&MdnRequest {
        from: our_address,
        to: &to,
        original_message_id: id,
        reporting_ua,
        disposition: MdnDisposition::Processed,
        final_destination_delivery: false,
    })
}
