//! Direct: the S/MIME core, policy, trust and discovery are the `switchboard-direct` crate
//! (`crates/direct`), re-exported here so the daemon names them `direct::…`. The Direct channel
//! (sending, MDN tracking) is `channels::direct`; the `certs` command is the binary's.

pub use switchboard_direct::*;

pub mod inbound;
pub mod mdn_outbox;
