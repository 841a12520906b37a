//! Switchboard: a healthcare interoperability gateway. It carries messages between an EHR's
//! secure conversations and the channels care happens on (Direct, fax, SMS, email), learns
//! patients and appointments from HL7 v2, and runs reminders — durably, once, without PHI in
//! its logs.
//!
//! Layers point one way: edges (`http`, `queue`, `hl7`, `cli`) call services (`app::App`:
//! `messages`, `patients`, `appointments`, `staff`, `inbound`, `deliveries`, `events`, …) and
//! `channels`, which call `store`; all of them speak the typed core in `domain`. See
//! `docs/ARCHITECTURE.md`.

pub mod alerts;
pub mod app;
pub mod app_events;
pub mod appointments;
pub mod attachments;
pub mod campaigns;
pub mod channels;
pub mod config;
pub mod connectors;
pub mod crypto;
pub mod daemon;
pub mod deliveries;
pub mod direct;
pub mod disclosure;
pub mod domain;
pub mod events;
pub mod fax;
pub mod fetch;
pub mod files;
pub mod hl7;
pub mod http;
pub mod http_client;
pub mod inbound;
pub mod intake;
pub mod keys;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod patients;
pub mod phone;
pub mod process;
pub mod progress;
pub mod queue;
pub mod ratelimit;
pub mod reach;
pub mod reminders;
pub mod retention;
pub mod service;
pub mod staff;
pub mod store;
pub mod supervise;
pub mod templates;
pub mod tenancy;
#[cfg(test)]
mod testing;
pub mod testing_hooks;
pub mod voice;
pub mod webhooks;

/// The delivery state machine's old path (`crate::delivery`), kept for callers and tests.
pub use domain::delivery;
