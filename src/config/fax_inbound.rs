//! `[fax_inbound]`: how received faxes are taken from providers' webhooks.

use serde::{Deserialize, Serialize};

/// Received faxes (`POST /hooks/{connector}/inbound` of a fax connector, then the
/// `fax-inbound` job).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FaxInboundConfig {
    /// Largest fax document, bytes: a posted file part (Phaxio) or a downloaded media URL
    /// (Telnyx). A larger posted one is refused (413); a larger download fails the fax (kept,
    /// `failed`, for the operator).
    pub max_document_bytes: u64,
    /// How long one media download may take, seconds (resolution, connection and body).
    pub media_timeout_secs: u64,
    /// Attempts at a received fax's work (download, filing) before it is left `failed`.
    pub max_attempts: u32,
    /// The wait before the second attempt, milliseconds; it doubles per attempt, up to an hour.
    pub retry_base_ms: u64,
    /// Received faxes worked on at once by one daemon (each holds its document in memory,
    /// within `limits.attachment_memory_bytes`).
    pub concurrency: usize,
    /// Transactions recording received faxes' webhooks at once (each commits the webhooks
    /// that arrived together, before they are answered). 0: one on SQLite, two on PostgreSQL.
    pub record_writers: usize,
}

impl Default for FaxInboundConfig {
    fn default() -> Self {
        Self {
            max_document_bytes: 50 * 1024 * 1024,
            media_timeout_secs: 120,
            max_attempts: 10,
            retry_base_ms: 30_000,
            concurrency: 4,
            record_writers: 0,
        }
    }
}

impl FaxInboundConfig {
    /// The wait after `attempts` failed attempts.
    pub fn backoff_ms(&self, attempts: u32) -> i64 {
        let factor = 1u64 << attempts.saturating_sub(1).min(20);
        let wait = self
            .retry_base_ms
            .max(1)
            .saturating_mul(factor)
            .min(3_600_000);
        i64::try_from(wait).unwrap_or(3_600_000)
    }
}
