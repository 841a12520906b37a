//! HL7 v2 as Switchboard speaks it: MLLP framing ([`mllp`]) and a small client ([`client`]),
//! an owned, decoded message over hl7-parser ([`message`], [`escape`]), HL7 timestamps
//! ([`time`]) and acknowledgements ([`ack`]). Nothing here knows the daemon: mapping messages
//! to patients and appointments, the listener and the archive live in the `switchboard` crate.

pub mod ack;
pub mod client;
pub mod escape;
pub mod message;
pub mod mllp;
pub mod time;
