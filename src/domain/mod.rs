//! The typed core every edge goes through: the vocabulary of `shared/ARCHITECTURE.md` as
//! types, and the rules that must hold the same wherever they are applied.
//!
//! - [`Channel`]: the channels a delivery can use, stored and shown by name.
//! - [`Address::canonical`]: the one form in which addresses are compared.
//! - [`consent`]: the one consent decision (opt-out, Part 2) over consent-ledger entries; the
//!   store's SQL only narrows which entries are read (`tests/consent_conformance.rs` proves the
//!   narrowing never changes a decision).
//! - [`delivery`]: the delivery state rule; the store applies exactly it
//!   (`tests/delivery_states.rs` walks every pair of states on both databases).
//! - [`AppointmentStatus`]: what an appointment's status may be, from HL7 (table 0278) or the
//!   API, and which statuses get reminders.
//!
//! Nothing here does I/O; the store stores these types by their names.

pub mod address;
pub mod appointment;
pub mod channel;
pub mod consent;
pub mod delivery;
pub mod identifier;

pub use address::{Address, AddressError};
pub use appointment::AppointmentStatus;
pub use channel::{Channel, UnknownChannel};
pub use delivery::DeliveryStatus;
