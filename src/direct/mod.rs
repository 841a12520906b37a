//! Direct: the S/MIME core, policy, trust and discovery are the `switchboard-direct` crate
//! (`crates/direct`), re-exported here so the daemon names them `direct::…`. The Direct channel
//! (sending, MDN tracking) is `channels::direct`; the `certs` command is the binary's.
//!
//! [`mdn`] adds the MDNs we owe senders of inbound messages (the outbox and its senders) to the
//! crate's MDN parsing and building, which it re-exports, so `direct::mdn::…` names both.

pub use switchboard_direct::*;

pub mod inbound;
pub mod mdn;
