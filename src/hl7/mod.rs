//! HL7 v2 over MLLP in the daemon: the listener (`listener`) and who may reach it (`access`),
//! mapping ADT/SIU to patients and appointments (`mapping`) and the processor that archives,
//! applies and acknowledges each message (`processor`). The protocol itself — framing, parsing,
//! escapes, timestamps, ACKs — is the `switchboard-hl7` crate (`crates/hl7`), re-exported here.

pub mod access;
pub mod listener;
pub mod mapping;
pub mod processor;

pub use switchboard_hl7::{ack, client, escape, message, mllp, time};
