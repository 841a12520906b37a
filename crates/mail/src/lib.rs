//! Mail for Switchboard, without the daemon: a minimal IMAP client ([`imap`]), byte-level MIME
//! helpers ([`mime`]), delivery notifications — MDN and DSN parsing and the processed MDN
//! built back ([`mdn`]) — and bounce recognition with our reference tokens ([`dsn`]).
//! Nothing here knows the store, the HTTP server or the configuration file.

pub mod dsn;
pub mod imap;
pub mod mdn;
pub mod mime;

use serde::{Deserialize, Serialize};

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
