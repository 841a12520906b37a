//! The events feed a client follows (`GET /v1/events?after=<cursor>&limit=<n>`), read in
//! commit order (see `store::events`). Events committed behind a transaction still open are
//! held back — handing them out would let a follower step over the open one — and such
//! transactions last milliseconds, so a page waits a little for them rather than return short.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::messages::rfc3339;
use crate::service::ServiceError;
use crate::store::{EventCursor, EventRow, Store};

/// How long a page of events waits for older transactions: 100 × 20 ms.
const HELD_BACK_RETRIES: usize = 100;
const HELD_BACK_PAUSE: Duration = Duration::from_millis(20);
/// Most events on one page.
pub const MAX_PAGE: i64 = 1000;
/// The longest a stream waits without a wake-up before reading the feed again.
const STREAM_POLL: Duration = Duration::from_secs(1);

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

/// One event: the envelope the feed, the stream and webhooks carry alike (`docs/events.md`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// The event's id (increasing, but the feed's order is the commit order).
    pub id: i64,
    /// The feed position just after this event: `?after=` / `Last-Event-ID` resume here.
    pub cursor: String,
    /// The organization the event belongs to.
    pub organization_id: String,
    /// `message.accepted`, `delivery.status`, `message.read`, `inbound.unmatched`, …
    pub kind: String,
    /// The version of this kind's payload contract (`docs/events.md`); a breaking change
    /// bumps it, and both versions are emitted for the deprecation window.
    pub event_version: u32,
    /// The id of what the event is about (a message, a delivery, an inbound item…).
    pub subject_id: String,
    /// Ids and states only, never PHI.
    pub payload: serde_json::Value,
    /// RFC 3339 (UTC).
    pub at: String,
}

impl EventView {
    /// The envelope of a stored event.
    pub fn from_row(r: EventRow) -> Self {
        Self {
            id: r.id,
            cursor: EventCursor::after(&r).to_string(),
            event_version: event_version(&r.kind),
            organization_id: r.organization_id,
            kind: r.kind,
            subject_id: r.subject_id,
            payload: serde_json::from_str(&r.payload).unwrap_or_default(),
            at: rfc3339(r.created_at),
        }
    }
}

/// Every event kind the gateway emits and the version of its payload contract: the
/// catalogue of `docs/events.md`, whose JSON Schemas are `docs/events/<kind>.v<version>.json`.
pub const CATALOGUE: [(&str, u32); 13] = [
    ("message.accepted", 1),
    ("urgent_message_sent", 1),
    ("delivery.status", 1),
    ("message.read", 1),
    ("appointment.changed", 1),
    ("appointment.confirmed", 1),
    ("appointment.cancel_requested", 1),
    ("appointment.reschedule_requested", 1),
    ("reminder.reply", 1),
    ("inbound.filed", 1),
    ("inbound.unmatched", 1),
    ("inbound.dismissed", 1),
    ("inbound.reassigned", 1),
];

/// The contract version of an event kind's payload (an unknown kind, written by another
/// system, is at version 1).
pub fn event_version(kind: &str) -> u32 {
    CATALOGUE
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(1, |(_, v)| *v)
}

/// `GET /v1/events`: a page of the feed and the cursor to pass next.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    pub events: Vec<EventView>,
    /// Pass as `?after=` for the next page (the same cursor when the page is empty).
    pub next_after: String,
}

/// The events feed of an organization.
#[derive(Clone)]
pub struct EventFeed {
    pub store: Store,
    /// Cancelled when the daemon shuts down: open streams end (an HTTP server drains its
    /// requests before stopping, and a stream would never finish).
    pub closing: tokio_util::sync::CancellationToken,
}

impl EventFeed {
    /// Up to `limit` (1 to [`MAX_PAGE`]) events after `after`, in commit order.
    pub async fn page(
        &self,
        organization_id: &str,
        after: Cursor,
        limit: i64,
    ) -> Result<EventsPage, ServiceError> {
        let (rows, next) = self.rows_after(organization_id, after.0, limit).await?;
        Ok(EventsPage {
            events: rows.into_iter().map(EventView::from_row).collect(),
            next_after: next.to_string(),
        })
    }

    /// The page query every follower shares (the API, the stream): up to `limit` final
    /// events after `cursor`, waiting a little for held-back ones, and the cursor after them.
    async fn rows_after(
        &self,
        organization_id: &str,
        cursor: EventCursor,
        limit: i64,
    ) -> Result<(Vec<EventRow>, EventCursor), ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut page = self
            .store
            .events()
            .after(organization_id, cursor, limit)
            .await?;
        for _ in 0..HELD_BACK_RETRIES {
            if !page.held_back {
                break;
            }
            tokio::time::sleep(HELD_BACK_PAUSE).await;
            page = self
                .store
                .events()
                .after(organization_id, cursor, limit)
                .await?;
        }
        let next = page.events.last().map_or(cursor, EventCursor::after);
        Ok((page.events, next))
    }

    /// The live stream (`GET /v1/events/stream`): the events after `after` of the kinds in
    /// `kinds` (all when empty), then each new one as it commits, for ever — until the
    /// daemon shuts down or the store fails (the client resumes from the last `cursor` it
    /// saw). It reads the feed's own pages, so it hands out exactly what paging would, in the
    /// same order: nothing skipped, nothing twice. Woken by `Store::events_written`, and
    /// every [`STREAM_POLL`] at the latest.
    pub fn follow(
        &self,
        organization_id: String,
        after: Cursor,
        kinds: Vec<String>,
    ) -> impl futures::Stream<Item = EventView> + Send + 'static + use<> {
        struct Follow {
            feed: EventFeed,
            organization_id: String,
            cursor: EventCursor,
            kinds: Vec<String>,
            ready: std::collections::VecDeque<EventView>,
            written: tokio::sync::watch::Receiver<u64>,
        }
        let state = Follow {
            written: self.store.events_written(),
            feed: self.clone(),
            organization_id,
            cursor: after.0,
            kinds,
            ready: Default::default(),
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(event) = s.ready.pop_front() {
                    return Some((event, s));
                }
                if s.feed.closing.is_cancelled() {
                    return None;
                }
                // Marked before reading: a write during the read wakes the wait below.
                s.written.mark_unchanged();
                let (rows, next) = match s.feed.rows_after(&s.organization_id, s.cursor, 200).await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(organization_id = %s.organization_id, error = %e, "event stream ended: the feed failed");
                        return None;
                    }
                };
                let full = rows.len() == 200;
                s.cursor = next;
                s.ready.extend(
                    rows.into_iter()
                        .filter(|r| s.kinds.is_empty() || s.kinds.contains(&r.kind))
                        .map(EventView::from_row),
                );
                if s.ready.is_empty() && !full {
                    tokio::select! {
                        _ = s.feed.closing.cancelled() => return None,
                        _ = s.written.changed() => {}
                        _ = tokio::time::sleep(STREAM_POLL) => {}
                    }
                }
            }
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
