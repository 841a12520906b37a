//! The events table: an append-only outbox the internal messaging app follows (on PostgreSQL a
//! trigger also sends `NOTIFY switchboard_events`).
//!
//! Followers read in commit order, not id order: on PostgreSQL identity ids are taken at
//! insert, so a transaction that took id 5 can commit after one that took id 6. Each row records
//! its writing transaction (`tx`, 0 on SQLite's single writer), the feed is ordered by
//! (tx, id), and a read stops below the oldest transaction still running — nothing can later
//! appear behind a cursor that was handed out.

use super::{EventRow, Events, Result, StoreError, now_ms, on_db};

/// A position in the events feed: the last (tx, id) seen. `floor` keeps the meaning of a bare
/// id cursor (`after=N`: events with a larger id) for followers that stored one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCursor {
    pub tx: i64,
    pub id: i64,
    pub floor: i64,
}

impl EventCursor {
    /// Parses `"<tx>.<id>"` (what the feed hands out) or a bare id `"N"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('.') {
            Some((tx, id)) => Some(Self {
                tx: tx.parse().ok()?,
                id: id.parse().ok()?,
                floor: 0,
            }),
            None => {
                let id = text.parse().ok()?;
                Some(Self {
                    tx: 0,
                    id,
                    floor: id,
                })
            }
        }
    }

    /// The cursor just after `row`.
    pub fn after(row: &EventRow) -> Self {
        Self {
            tx: row.tx,
            id: row.id,
            floor: 0,
        }
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.floor != 0 && self.tx == 0 && self.id == self.floor {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}.{}", self.tx, self.id)
        }
    }
}

/// [`Events::of_kinds_since`]'s statement: the kinds as literals, so that the partial index
/// `events_kind_time` (which holds the notifier's kinds only) is seen to serve them.
fn kinds_since_sql(kinds: &[&str]) -> String {
    let list = kinds
        .iter()
        .map(|k| format!("'{}'", k.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT id, organization_id, kind, subject_id, payload, created_at FROM events
         WHERE kind IN ({list}) AND created_at >= $1 AND (created_at > $2 OR (created_at = $2 AND id > $3))
         ORDER BY created_at, id LIMIT $4"
    )
}

/// A page of the feed: the events that are final, and whether committed events behind an
/// open transaction were held back (worth asking again in a moment).
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<EventRow>,
    pub held_back: bool,
}

impl Events<'_> {
    /// Events of an organization after `cursor`, in commit order, oldest first.
    pub async fn after(
        self,
        organization_id: &str,
        cursor: EventCursor,
        limit: i64,
    ) -> Result<EventPage> {
        // Read first: a later statement's horizon can only be higher.
        let settled = self.db().settled_tx().await?.unwrap_or(i64::MAX);
        let mut events: Vec<EventRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, organization_id, kind, subject_id, payload, created_at, tx FROM events
             WHERE organization_id = $1 AND (tx > $2 OR (tx = $2 AND id > $3)) AND id > $4
             ORDER BY tx, id LIMIT $5",
        )
        .bind(organization_id)
        .bind(cursor.tx)
        .bind(cursor.id)
        .bind(cursor.floor)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        let final_part = events.iter().take_while(|e| e.tx < settled).count();
        let held_back = final_part < events.len();
        events.truncate(final_part);
        Ok(EventPage { events, held_back })
    }

    /// Records an event (no PHI in the payload: ids and codes only).
    pub async fn record(
        self,
        organization_id: &str,
        kind: &str,
        subject_id: &str,
        payload: &serde_json::Value,
    ) -> Result<()> {
        let now = now_ms();
        let payload = payload.to_string();
        on_db!(self.db(), |pool| {
            sqlx::query(
            "INSERT INTO events (organization_id, kind, subject_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(organization_id).bind(kind).bind(subject_id).bind(&payload).bind(now)
        .execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Events of these kinds created at or after `since` (unix ms), all organizations, in
    /// (created_at, id) order, after the key `(after_time, after_id)` when given (paging).
    pub async fn of_kinds_since(
        self,
        kinds: &[&str],
        since: i64,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let (after_time, after_id) = after.unwrap_or((since, i64::MIN));
        let sql = sqlx::AssertSqlSafe(kinds_since_sql(kinds));
        Ok(on_db!(self.db(), |pool| sqlx::query_as(sql)
            .bind(since)
            .bind(after_time)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await)?)
    }

    /// Where the organization's feed ends now: a new endpoint starts here (events committed
    /// from now on are sent; nothing committing late behind an open transaction is skipped,
    /// since on PostgreSQL the position is just below the oldest transaction still running).
    pub async fn head(self, organization_id: &str) -> Result<EventCursor> {
        match self.db().settled_tx().await? {
            // The same horizon as `after`: below it every transaction has ended.
            Some(settled) => Ok(EventCursor {
                tx: settled - 1,
                id: i64::MAX,
                floor: 0,
            }),
            None => {
                let id: Option<i64> = on_db!(self.db(), |pool| sqlx::query_scalar(
                    "SELECT MAX(id) FROM events WHERE organization_id = $1"
                )
                .bind(organization_id)
                .fetch_one(pool)
                .await)?;
                Ok(EventCursor {
                    tx: 0,
                    id: id.unwrap_or(0),
                    floor: 0,
                })
            }
        }
    }

    /// One event of an organization by id.
    pub async fn get(self, organization_id: &str, id: i64) -> Result<super::EventRow> {
        on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT id, organization_id, kind, subject_id, payload, created_at, tx FROM events
             WHERE organization_id = $1 AND id = $2"
        )
        .bind(organization_id)
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or(StoreError::NotFound)
    }

    /// Events of an organization by id (those that exist).
    pub async fn by_ids(self, organization_id: &str, ids: &[i64]) -> Result<Vec<super::EventRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_db!(self.db(), |pool| {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT id, organization_id, kind, subject_id, payload, created_at, tx FROM events WHERE organization_id = ",
            );
            qb.push_bind(organization_id).push(" AND id IN (");
            let mut list = qb.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            qb.push(")");
            qb.build_query_as().fetch_all(pool).await
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::EventCursor;

    #[test]
    fn cursors_parse_and_print() {
        let bare = EventCursor::parse("42").expect("bare id");
        assert_eq!(
            bare,
            EventCursor {
                tx: 0,
                id: 42,
                floor: 42
            }
        );
        assert_eq!(bare.to_string(), "42");
        let full = EventCursor::parse("917.43").expect("tx.id");
        assert_eq!(
            full,
            EventCursor {
                tx: 917,
                id: 43,
                floor: 0
            }
        );
        assert_eq!(full.to_string(), "917.43");
        assert_eq!(EventCursor::parse(""), None);
        assert_eq!(EventCursor::parse("x.1"), None);
        assert_eq!(EventCursor::parse("-"), None);
    }

    /// The wake-up for followers on PostgreSQL (the statement-level trigger of migration
    /// 0030): a statement that writes events of two organizations notifies
    /// `switchboard_events` for each, and a single event notifies its organization.
    #[tokio::test]
    async fn written_events_notify_their_organizations_on_postgres() {
        let crate::testing::Fixture {
            core,
            org,
            guard,
            dir: _dir,
        } = crate::testing::Fixture::new(true, "notify", "Notify").await;
        let other = core
            .store
            .organizations()
            .ensure("notify-other", "Notify other")
            .await
            .expect("organization");
        let mut listener = core
            .store
            .listener()
            .await
            .expect("listener")
            .expect("PostgreSQL has one");
        listener.listen("switchboard_events").await.expect("LISTEN");
        let crate::store::Db::Postgres(pool) = core.store.db() else {
            panic!("a PostgreSQL store");
        };
        sqlx::query(
            "INSERT INTO events (organization_id, kind, subject_id, payload, created_at)
             SELECT o, 'test.event', 'x' || n, '{}', 0
               FROM UNNEST(ARRAY[$1, $1, $2, $1]) WITH ORDINALITY AS v (o, n)",
        )
        .bind(&org.id)
        .bind(&other.id)
        .execute(pool)
        .await
        .expect("events");
        let mut next = async || {
            tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
                .await
                .expect("a notification in time")
                .expect("notification")
                .payload()
                .to_string()
        };
        let mut woken = vec![next().await, next().await];
        woken.sort();
        let mut wanted = vec![org.id.clone(), other.id.clone()];
        wanted.sort();
        assert_eq!(woken, wanted);
        core.store
            .events()
            .record(&other.id, "test.event", "y", &serde_json::json!({}))
            .await
            .expect("record");
        assert_eq!(next().await, other.id);
        drop(listener);
        crate::testing::close(core, guard).await;
    }

    /// The urgent notifier reads its kinds through `events_kind_time`, which holds only those
    /// kinds: its list and the index's predicate agree (on SQLite, term for term).
    #[tokio::test]
    async fn the_notifier_reads_its_kinds_through_the_partial_index() {
        for postgres in [false, true] {
            let crate::testing::Fixture {
                core,
                org,
                guard,
                dir: _dir,
            } = crate::testing::Fixture::new(postgres, "kinds", "Kinds").await;
            let events = core.store.events();
            for kind in ["message.accepted", "urgent_message_sent", "message.read"] {
                events
                    .record(&org.id, kind, "msg_1", &serde_json::json!({}))
                    .await
                    .expect("event");
            }
            let found = events
                .of_kinds_since(&crate::notify::EVENT_KINDS, 0, None, 10)
                .await
                .expect("read");
            let kinds: Vec<&str> = found.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["urgent_message_sent", "message.read"]);
            let sql = super::kinds_since_sql(&crate::notify::EVENT_KINDS);
            let plan = match core.store.db() {
                crate::store::Db::Sqlite(pool) => {
                    let rows: Vec<(i64, i64, i64, String)> =
                        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                            .bind(0_i64)
                            .bind(0_i64)
                            .bind(0_i64)
                            .bind(10_i64)
                            .fetch_all(pool)
                            .await
                            .expect("plan");
                    rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
                }
                crate::store::Db::Postgres(pool) => {
                    let mut conn = pool.acquire().await.expect("connection");
                    sqlx::raw_sql("SET enable_seqscan = off")
                        .execute(&mut *conn)
                        .await
                        .expect("no table scans");
                    let (plan,): (serde_json::Value,) =
                        sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
                            .bind(0_i64)
                            .bind(0_i64)
                            .bind(0_i64)
                            .bind(10_i64)
                            .fetch_one(&mut *conn)
                            .await
                            .expect("plan");
                    // An index scan names it, as does a bitmap heap scan's child.
                    plan.to_string()
                }
            };
            assert!(
                plan.contains("events_kind_time"),
                "postgres {postgres}: {plan}"
            );
            // And only the notifier's two events of the three are in it.
            crate::store::on_db!(core.store.db(), |pool| {
                sqlx::raw_sql("ANALYZE events")
                    .execute(pool)
                    .await
                    .expect("analyze");
            });
            let entries: i64 = match core.store.db() {
                crate::store::Db::Sqlite(pool) => {
                    let (stat,): (String,) = sqlx::query_as(
                        "SELECT stat FROM sqlite_stat1 WHERE idx = 'events_kind_time'",
                    )
                    .fetch_one(pool)
                    .await
                    .expect("index statistics");
                    stat.split(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(-1)
                }
                crate::store::Db::Postgres(pool) => {
                    let (n,): (f32,) = sqlx::query_as(
                        "SELECT reltuples FROM pg_class WHERE relname = 'events_kind_time'",
                    )
                    .fetch_one(pool)
                    .await
                    .expect("index size");
                    n as i64
                }
            };
            assert_eq!(entries, 2, "postgres {postgres}");
            crate::testing::close(core, guard).await;
        }
    }
}
