//! The events table: an append-only outbox the internal messaging app follows (by id cursor;
//! on PostgreSQL a trigger also sends `NOTIFY switchboard_events`).

use super::{EventRow, Result, Store, on_db};

impl Store {
    /// Events of an organization after the cursor `after_id`, oldest first.
    pub async fn events_after(
        &self,
        organization_id: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        Ok(on_db!(self.db(), pool => sqlx::query_as(
            "SELECT id, organization_id, kind, subject_id, payload, created_at FROM events
             WHERE organization_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(organization_id).bind(after_id).bind(limit)
        .fetch_all(pool).await)?)
    }
}
