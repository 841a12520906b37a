//! Direct secure messaging (Direct Project Applicability Statement v1.3):
//! the S/MIME core.
//!
//! * `policy` — the v1.3 certificate/algorithm rules, one `Violation` per failure.
//! * `trust` — trust anchors, CRLs and path validation at an injected time.
//! * `smime` — `seal` (wrap, sign, encrypt) and `open` (decrypt, verify, unwrap;
//!   implemented in `open.rs`).
//! * `mdn` — MDN/DSN parsing into `Notification`s and building processed MDNs.
//! * `cms`, `mime`, `ffi` — private helpers; `ffi` holds all `unsafe`.
//! * `fuzzing` — hidden entry points to those helpers for the fuzz targets (`fuzz/`).
//!
//! * `inbound` — `accept`: the security processing of a received message (decrypt, verify,
//!   policy, inbound anchors, signer CRLs), with a `Refusal` naming the failing check.
//! * `anchors` — trust anchors per peer domain and direction.
//! * `discovery` — recipient certificates: local store, then DNS CERT, then LDAP.
//!
//! Not here: SMTP/IMAP transport, persistence, message-tracking state and the network policy
//! discovery fetches under (all in the `switchboard` daemon crate; discovery reaches the
//! network only through the [`discovery::fetch::Fetch`] trait the daemon implements). MIME
//! helpers and MDN/DSN parsing are `switchboard-mail`, re-exported here as `mime` and `mdn`.

pub mod anchors;
mod cms;
pub mod discovery;
mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod inbound;
pub use switchboard_mail::{mdn, mime};
mod open;
pub mod policy;
pub mod smime;
pub mod tools;
pub mod trust;

pub use policy::{Check, ContentCipher, KeyPurpose, Verdict, Violation};
pub use smime::{DirectError, KeyTransport, Opened, SealCipher, SealOptions, open, seal};
pub use trust::{TrustError, TrustStore, load_certs, load_crls};

#[cfg(test)]
mod tests;
