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
//!
//! The store applies exactly this rule: a status report moves a delivery only while its
//! status is one of [`DeliveryStatus::allowed_from`] the reported status (the list in the
//! `UPDATE`'s `WHERE` is generated from [`DeliveryStatus::can_move_to`]), and a claim takes
//! only a [`DeliveryStatus::is_claimable`] delivery. `tests/delivery_states.rs` walks every
//! pair of states against the real store on both databases.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// The statuses a delivery may move to `self` from (empty for `queued`: nothing moves a
    /// delivery back to the start).
    pub fn allowed_from(self) -> Vec<DeliveryStatus> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_move_to(self))
            .collect()
    }

    /// Whether a worker may claim a delivery in this status for a send attempt: `queued`, or
    /// `sending` (a retry, or a lease that ran out). A claim re-enters `sending`; it is a lease,
    /// not a report, so it is the one move that keeps the rank.
    pub fn is_claimable(self) -> bool {
        matches!(self, Self::Queued | Self::Sending)
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
    fn allowed_from_is_can_move_to_read_backwards() {
        for next in super::DeliveryStatus::ALL {
            for from in super::DeliveryStatus::ALL {
                assert_eq!(
                    next.allowed_from().contains(&from),
                    from.can_move_to(next),
                    "{from:?} -> {next:?}"
                );
            }
        }
        assert!(Queued.allowed_from().is_empty());
        assert_eq!(Sent.allowed_from(), vec![Queued, Sending]);
        // Direct's MDNs: processed after sent, dispatched after processed; never back.
        assert!(Sent.can_move_to(Processed) && Processed.can_move_to(Dispatched));
        assert!(!Dispatched.can_move_to(Processed) && !Processed.can_move_to(Sent));
    }

    #[test]
    fn names_round_trip() {
        for status in super::DeliveryStatus::ALL {
            assert_eq!(super::DeliveryStatus::parse(status.as_str()), Some(status));
        }
    }
}
