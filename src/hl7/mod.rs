//! HL7 v2 over MLLP: the listener (`listener`) and who may reach it (`access`), framing (`mllp`), parsing (`message`,
//! `escape`, `time`), mapping ADT/SIU to patients and appointments (`mapping`), ACKs (`ack`)
//! and the processor that archives, applies and acknowledges each message (`processor`).

pub mod access;
pub mod ack;
pub mod client;
pub mod escape;
pub mod listener;
pub mod mapping;
pub mod message;
pub mod mllp;
pub mod processor;
pub mod time;
