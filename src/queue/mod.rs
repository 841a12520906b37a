//! The job queue: apalis on the same database as the store (SQLite `Jobs` table, PostgreSQL
//! schema `apalis`). One job per batch of a channel's deliveries (accepted or swept
//! together, [`jobs::DELIVERIES_PER_JOB`] at most), one queue per channel
//! (`switchboard.deliver.<channel>`, named explicitly so renaming a Rust type never orphans
//! rows).
//!
//! Jobs are wake-ups; the `deliveries` row is the truth. A job whose delivery is not waiting
//! does nothing, so duplicate jobs are harmless, and the [`sweeper`] may push a job whenever
//! it suspects one was lost. Retries are not apalis retries: a transient failure records the
//! attempt and pushes a new job delayed by the backoff ([`retry`]), so waiting holds no worker
//! and survives restarts.

pub mod bounces;
pub mod direct;
pub mod jobs;
pub mod pause;
pub mod poll;
pub mod reconcile;
pub mod retry;
pub mod sweeper;
pub mod wakeups;
pub mod worker;

pub use jobs::{DeliveryJob, JobQueue, QueueError};
pub use worker::Deliverer;

/// Why a background pass (sweep, start-up recovery, reconciliation) stopped early; it is
/// logged and the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}
