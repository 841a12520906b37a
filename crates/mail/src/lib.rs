//! Mail for Switchboard, without the daemon: a minimal IMAP client ([`imap`]), byte-level MIME
//! helpers ([`mime`]), delivery notifications — MDN and DSN parsing and the processed MDN
//! built back ([`mdn`]) — and bounce recognition with our reference tokens ([`dsn`]).
//! Nothing here knows the store, the HTTP server or the configuration file.

pub mod dsn;
pub mod imap;
pub mod mdn;
pub mod mime;

use serde::{Deserialize, Serialize};

/// Parses a whole message with mail-parser. A panic inside mail-parser counts as "does not
/// parse": its debug assertions fire on some malformed multipart nesting (found by the
/// `reports` fuzz target), and input must never take a task down.
pub fn parse_message(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

/// Parses only the header of a message, as [`parse_message`] does the whole.
pub fn parse_headers(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse_headers(raw))
        .ok()
        .flatten()
}

/// How an SMTP (or IMAP) connection is secured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// TLS from the first byte (SMTPS 465, IMAPS 993).
    Implicit,
    /// STARTTLS, refusing to continue in clear text.
    #[default]
    Starttls,
    /// STARTTLS when the server offers it, clear text otherwise.
    Opportunistic,
    /// Clear text (loopback relays and tests only).
    None,
}

/// Replaces every word holding an `@` (an address, in replies such as `550 5.1.1
/// <jane@example.org>: Recipient address rejected`) so failure reasons, which are logged and
/// shown, carry no patient address.
pub fn redact_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                if word.ends_with(':') {
                    "<address>:"
                } else {
                    "<address>"
                }
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    /// Found by the `reports` fuzz target: nested multipart/report parts that trip a debug
    /// assertion inside mail-parser ("Invalid part ID, could not find multipart"). Read as
    /// whatever it parses to, never a panic (test builds have debug assertions on).
    #[test]
    fn a_message_that_trips_mail_parser_does_not_panic() {
        let raw = include_bytes!("../../../tests/data/fuzz/reports-mail-parser-part-id.eml");
        let _ = crate::mdn::parse_notifications(raw);
        let _ = crate::mdn::parse_notification(raw);
        let _ = crate::dsn::parse_bounce(raw);
        let _ = crate::parse_headers(raw);
    }
}
