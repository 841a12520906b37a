//! Switchboard: a healthcare interoperability gateway. It carries messages between an EHR's
//! secure conversations and the channels care happens on (Direct, fax, SMS, email), learns
//! patients and appointments from HL7 v2, and runs reminders — durably, once, without PHI in
//! its logs.
//!
//! Layers point one way: `http` and `queue` call domain modules (`messages`, `channels`),
//! which call `store`. See `docs/ARCHITECTURE.md`.

pub mod campaigns;
pub mod channels;
pub mod config;
pub mod connectors;
pub mod crypto;
pub mod daemon;
pub mod delivery;
pub mod direct;
pub mod disclosure;
pub mod fetch;
pub mod files;
pub mod hl7;
pub mod http;
pub mod inbound;
pub mod intake;
pub mod logging;
pub mod messages;
pub mod notify;
pub mod phone;
pub mod process;
pub mod queue;
pub mod ratelimit;
pub mod reach;
pub mod reminders;
pub mod store;
pub mod supervise;
pub mod templates;
pub mod tenancy;
