//! The events feed a client follows (`GET /v1/events?after=<cursor>&limit=<n>`), read in
//! commit order (see `store::events`). Events committed behind a transaction still open are
//! held back — handing them out would let a follower step over the open one — and such
//! transactions last milliseconds, so a page waits a little for them rather than return short.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::messages::rfc3339;
use crate::service::ServiceError;
use crate::store::{EventCursor, Store};

/// How long a page of events waits for older transactions: 100 × 20 ms.
const HELD_BACK_RETRIES: usize = 100;
const HELD_BACK_PAUSE: Duration = Duration::from_millis(20);
/// Most events on one page.
pub const MAX_PAGE: i64 = 1000;

/// A position in the feed as clients hold it: the `next_after` of the previous page
/// (`"<tx>.<id>"`), a bare event id, or empty for the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor(EventCursor);

impl std::str::FromStr for Cursor {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Ok(Cursor::default());
        }
        EventCursor::parse(text)
            .map(Cursor)
            .ok_or("must be a cursor from `next_after` or an event id")
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// The event's id (increasing, but the feed's order is the commit order).
    pub id: i64,
    /// `message.accepted`, `delivery.status`, `message.read`, `inbound.unmatched`, …
    pub kind: String,
    /// The id of what the event is about (a message, a delivery, an inbound item…).
    pub subject_id: String,
    /// Ids and states only, never PHI.
    pub payload: serde_json::Value,
    /// RFC 3339 (UTC).
    pub at: String,
}

/// `GET /v1/events`: a page of the feed and the cursor to pass next.
#[derive(Debug, Clone, Serialize)]
pub struct EventsPage {
    pub events: Vec<EventView>,
    /// Pass as `?after=` for the next page (the same cursor when the page is empty).
    pub next_after: String,
}

/// The events feed of an organization.
#[derive(Clone)]
pub struct EventFeed {
    pub store: Store,
}

impl EventFeed {
    /// Up to `limit` (1 to [`MAX_PAGE`]) events after `after`, in commit order.
    pub async fn page(
        &self,
        organization_id: &str,
        after: Cursor,
        limit: i64,
    ) -> Result<EventsPage, ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let cursor = after.0;
        let mut page = self
            .store
            .events_after(organization_id, cursor, limit)
            .await?;
        for _ in 0..HELD_BACK_RETRIES {
            if !page.held_back {
                break;
            }
            tokio::time::sleep(HELD_BACK_PAUSE).await;
            page = self
                .store
                .events_after(organization_id, cursor, limit)
                .await?;
        }
        let rows = page.events;
        let next = rows.last().map_or(cursor, EventCursor::after);
        Ok(EventsPage {
            events: rows
                .into_iter()
                .map(|r| EventView {
                    id: r.id,
                    kind: r.kind,
                    subject_id: r.subject_id,
                    payload: serde_json::from_str(&r.payload).unwrap_or_default(),
                    at: rfc3339(r.created_at),
                })
                .collect(),
            next_after: next.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursors_read_what_the_feed_hands_out() {
        assert_eq!(
            "12.34".parse::<Cursor>().map(|c| c.to_string()),
            Ok("12.34".into())
        );
        assert_eq!(
            "34".parse::<Cursor>().map(|c| c.to_string()),
            Ok("34".into())
        );
        assert_eq!("".parse::<Cursor>(), Ok(Cursor::default()));
        assert!("x.1".parse::<Cursor>().is_err());
    }
}
