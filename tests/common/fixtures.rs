//! Rows the store tests start from: an outbound message opening a routine thread, and its
//! deliveries.

use switchboard::store::{NewDelivery, NewMessage, new_id, now_ms};

/// An outbound message of `organization_id` in a new routine thread, about no patient, not
/// urgent, with `content` (sealed by the caller, or a stand-in the test never opens).
pub fn outbound_message(organization_id: &str, content: Vec<u8>) -> NewMessage {
    NewMessage {
        id: new_id("msg"),
        organization_id: organization_id.to_string(),
        thread_id: new_id("thr"),
        new_thread_category: Some("routine".into()),
        patient_id: None,
        direction: "outbound".into(),
        content,
        urgent: false,
        part2: false,
        metadata: "{}".into(),
        created_at: now_ms(),
    }
}

/// A delivery on `channel` to `recipient`, three attempts.
pub fn delivery(channel: &str, recipient: &str) -> NewDelivery {
    NewDelivery {
        id: new_id("dlv"),
        channel: channel.into(),
        recipient: recipient.into(),
        max_attempts: 3,
    }
}
