//! Direct in the daemon: the S/MIME core, policy, trust and discovery are the
//! `switchboard-direct` crate (`crates/direct`), re-exported here; what stays is what needs
//! the daemon — the benchmark and the `certs` command.

pub mod bench;
pub mod certs_cli;

pub use switchboard_direct::*;
