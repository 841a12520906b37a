//! Intake: what arrives from outside (inbound SMS today; Direct and fax next) on its way to a
//! patient's thread or the unmatched queue. [`matching`] decides which patient an item is
//! about — deterministically, explainably, and preferring "unmatched" to a wrong patient.

pub mod matching;
