//! The delivery state machine.
//!
//! ```text
//!   queued ──► sending ──► sent ──► processed ──► dispatched      (Direct, via MDNs)
//!                 │  ▲       │                                     
//!                 │  └retry  └──────────────────► delivered        (provider receipts, sink)
//!                 └──────────► failed | expired  (from any non-terminal state)
//! ```
//!
//! Every status has a rank; a delivery only moves to a higher rank, and never out of a
//! terminal state (`delivered`, `dispatched`, `failed`, `expired`). A late or duplicate
//! update is still written to `delivery_events` (with `applied = false`) so the history shows
//! it, but it never moves the delivery backwards. `sending` is re-entered on each attempt:
//! a claim leases the delivery to one worker until `not_before`, and a transient failure
//! keeps it in `sending` with `not_before` set to the next attempt's time.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Processed,
    Dispatched,
    Delivered,
    Failed,
    Expired,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 8] = [
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Processed,
        Self::Dispatched,
        Self::Delivered,
        Self::Failed,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Processed => "processed",
            Self::Dispatched => "dispatched",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Order along the happy path; failure and expiry outrank everything.
    pub fn rank(self) -> i64 {
        match self {
            Self::Queued => 0,
            Self::Sending => 1,
            Self::Sent => 2,
            Self::Processed => 3,
            Self::Dispatched => 4,
            Self::Delivered => 5,
            Self::Failed | Self::Expired => 9,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Dispatched | Self::Failed | Self::Expired
        )
    }

    /// Whether a delivery in `self` may move to `next`.
    pub fn can_move_to(self, next: DeliveryStatus) -> bool {
        !self.is_terminal() && next.rank() > self.rank()
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus::*;

    #[test]
    fn moves_only_forward() {
        assert!(Queued.can_move_to(Sending));
        assert!(Sending.can_move_to(Delivered));
        assert!(Sent.can_move_to(Failed));
        assert!(!Sent.can_move_to(Sending));
        assert!(!Delivered.can_move_to(Sent));
        assert!(!Delivered.can_move_to(Failed));
        assert!(!Failed.can_move_to(Delivered));
        assert!(!Sent.can_move_to(Sent));
    }

    #[test]
    fn names_round_trip() {
        for status in super::DeliveryStatus::ALL {
            assert_eq!(super::DeliveryStatus::parse(status.as_str()), Some(status));
        }
    }
}
