//! The store: every SQL statement of the daemon lives under this module, one file per
//! aggregate. It speaks to SQLite (embedded default) or PostgreSQL (fleet) through sqlx; each
//! statement is written once in the dialect both accept (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`) and run by whichever pool is configured ([`on_db!`]). Timestamps are unix
//! epoch milliseconds. The store holds sealed bytes only; sealing is the caller's business.
//!
//! The job queue (apalis) keeps its own tables in the same database: `Jobs`/`Workers` on
//! SQLite, schema `apalis` on PostgreSQL. Our migrations are tracked in
//! `switchboard_migrations`, apart from apalis's `_sqlx_migrations`.

#[macro_use]
mod columns;
mod api_keys;
mod appointments;
pub(crate) mod attachments;
mod audit;
mod campaigns;
mod canary;
mod consents;
mod deliveries;
mod direct;
mod direct_inbound;
mod direct_mdns;
mod events;
mod fax;
mod group;
mod hl7;
mod inbound;
mod intake;
mod matching;
mod messages;
mod organizations;
mod patients;
mod reminders;
mod rows;
mod touch_batch;
mod urgent;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// The consent rule's types, where the loaders return them.
pub use crate::domain::consent::{ConsentEntry, ConsentLedger, Part2Consents};
pub use api_keys::{ALL_SCOPES, ApiKeyRow, KeyGrant, NewApiKey};
pub use appointments::{AppointmentInput, AppointmentRow, RecallInput, RecallRow};
pub use attachments::{AttachmentBlob, AttachmentRow, NewAttachment};
pub use audit::AuditEntry;
pub use campaigns::{CampaignCounts, CampaignRow, CohortRow};
pub use consents::ConsentChange;
pub use deliveries::{Claimed, DeliveryUpdate, SweepItem};
pub use direct_inbound::Quarantine as DirectQuarantine;
pub use direct_mdns::{MdnRow, NewMdnRow};
pub use events::{EventCursor, EventPage};
pub use fax::{FaxMediaRow, FaxRecordRow};
pub use group::{AfterAccept, GroupCommit};
pub use hl7::{Hl7Arrival, Hl7Effects, Hl7Outcome, Hl7Row};
pub use inbound::{FileInbound, InboundRow, NewInbound, NewOrphan, OrphanRow};
pub use intake::{ReassignInbound, StepRow};
pub use matching::PatientDemographics;
pub use messages::{AcceptItem, AcceptOutcome, NewDelivery, NewMessage};
pub use patients::{ConsentInput, ContactPointInput, PatientInput};
pub use reminders::{NewTouch, PlanRow, TouchRow};
pub use rows::*;
pub use touch_batch::{AcceptedTouch, TouchOutcome};
pub use urgent::{AlertRow, NewNotification, StaffInput, StaffRow};
pub use webhooks::{NewWebhookDelivery, WebhookDeliveryRow, WebhookEndpointRow};

/// Store errors. `NotFound` is what a caller may show; everything else is internal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("job queue setup: {0}")]
    Queue(#[source] apalis_postgres::Error),
    #[error("the group-commit writer has stopped")]
    Closed,
    #[error("unsupported database url (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database, with its pool.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same expression against whichever pool is configured:
/// `on_db!(self.db(), |pool| sqlx::query(sql).execute(pool).await)`. The expression is
/// compiled once per backend, so every bound value must encode for both. Written like a
/// closure so rustfmt formats the body (it leaves `pool => …` macro arguments alone).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub use on_db;

/// The store handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Bumped when events may have been written (on SQLite by an update hook on every
    /// connection; on PostgreSQL by the daemon's `LISTEN switchboard_events`): followers of the
    /// feed (the event stream, the webhook dispatcher) wait on it instead of polling. A wake-up
    /// is a hint; the feed is the truth.
    events_written: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed).
    pub async fn connect(url: &str, max_connections: u32, sqlite_full_sync: bool) -> Result<Self> {
        let events_written = std::sync::Arc::new(tokio::sync::watch::Sender::new(0u64));
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if sqlite_full_sync {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            prepare_sqlite_file(options.get_filename()).map_err(sqlx::Error::Io)?;
            let pool = SqlitePoolOptions::new()
                // SQLite has one writer. One connection queues writers in-process (fair, no
                // waiting) instead of letting them collide and sleep in SQLite's busy handler,
                // which measured 2x slower with p99 latencies in the hundreds of ms.
                .max_connections(1)
                .after_connect({
                    let events_written = events_written.clone();
                    move |conn, _| {
                        let events_written = events_written.clone();
                        Box::pin(async move {
                            // Fires inside the writing statement; a follower woken by it reads
                            // through the same single connection, so after the commit.
                            conn.lock_handle().await?.set_update_hook(move |change| {
                                if change.table == "events" {
                                    events_written.send_modify(|n| *n = n.wrapping_add(1));
                                }
                            });
                            Ok(())
                        })
                    }
                })
                .connect_with(options)
                .await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?;
            Db::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        Ok(Self { db, events_written })
    }

    /// A receiver that changes whenever events may have been written (see `events_written`).
    pub fn events_written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_written.subscribe()
    }

    /// Tells the feed's followers that events may have been written (the PostgreSQL
    /// listener calls this on every notification and after reconnecting).
    pub fn wake_event_followers(&self) {
        self.events_written.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies our migrations and the job queue's.
    pub async fn migrate(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut ours = sqlx::migrate!("migrations/sqlite");
                ours.dangerous_set_table_name("switchboard_migrations");
                ours.run(pool).await?;
                // apalis's own migrations; its `setup()` would also turn synchronous OFF on a
                // pooled connection, which we do not want for a store of record.
                let mut queue = apalis_sqlite::SqliteStorage::<()>::migrations();
                queue.set_ignore_missing(true);
                queue.run(pool).await?;
            }
            Db::Postgres(pool) => {
                let mut ours = sqlx::migrate!("migrations/postgres");
                ours.dangerous_set_table_name("switchboard_migrations");
                ours.run(pool).await?;
                apalis_postgres::PostgresStorage::<()>::setup(pool)
                    .await
                    .map_err(StoreError::Queue)?;
            }
        }
        Ok(())
    }

    /// Which of our migrations this binary knows and which the database has applied.
    pub async fn schema_state(&self) -> Result<SchemaState> {
        let (known, applied): (Vec<i64>, Vec<(i64,)>) = match &self.db {
            Db::Sqlite(pool) => {
                let known = sqlx::migrate!("migrations/sqlite")
                    .iter()
                    .map(|m| m.version)
                    .collect();
                let exists: Option<(String,)> = sqlx::query_as(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'switchboard_migrations'",
                )
                .fetch_optional(pool)
                .await?;
                let applied = match exists {
                    Some(_) => sqlx::query_as(
                        "SELECT version FROM switchboard_migrations WHERE success ORDER BY version",
                    )
                    .fetch_all(pool)
                    .await?,
                    None => Vec::new(),
                };
                (known, applied)
            }
            Db::Postgres(pool) => {
                let known = sqlx::migrate!("migrations/postgres")
                    .iter()
                    .map(|m| m.version)
                    .collect();
                let (exists,): (bool,) =
                    sqlx::query_as("SELECT to_regclass('switchboard_migrations') IS NOT NULL")
                        .fetch_one(pool)
                        .await?;
                let applied = if exists {
                    sqlx::query_as(
                        "SELECT version FROM switchboard_migrations WHERE success ORDER BY version",
                    )
                    .fetch_all(pool)
                    .await?
                } else {
                    Vec::new()
                };
                (known, applied)
            }
        };
        Ok(SchemaState {
            known,
            applied: applied.into_iter().map(|(v,)| v).collect(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// A trivial query: readiness probe.
    pub async fn ping(&self) -> Result<()> {
        on_db!(&self.db, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_db!(&self.db, |pool| pool.close().await)
    }
}

/// Makes the database file owner-only before SQLite opens it: its directory 0700 when we
/// create it, the file created 0600 (SQLite gives `-wal` and `-shm` the database file's
/// mode), and an existing file and its `-wal`/`-shm` tightened to 0600.
fn prepare_sqlite_file(path: &std::path::Path) -> std::io::Result<()> {
    let name = path.as_os_str().to_string_lossy();
    if name.is_empty() || name.starts_with(':') {
        return Ok(()); // in memory
    }
    if let Some(dir) = path.parent() {
        crate::files::private_dir(dir)?;
    }
    match crate::files::create_private(path, b"") {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        crate::files::restrict_file(std::path::Path::new(&format!("{name}{suffix}")))?;
    }
    Ok(())
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new id: a type prefix and a ULID whose 80 low bits are fresh randomness for every id
/// (never the monotonic generator's "previous + 1": ids minted in the same millisecond must
/// not be guessable from one another). Ids still sort by their millisecond; within one
/// millisecond their order is random, so lists order by `created_at` first.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

#[cfg(test)]
mod id_tests {
    use super::new_id;

    #[test]
    fn ids_of_the_same_millisecond_are_not_consecutive() {
        let ids: Vec<String> = (0..64).map(|_| new_id("dlv")).collect();
        for pair in ids.windows(2) {
            let (a, b) = (&pair[0][4..], &pair[1][4..]);
            if a[..10] != b[..10] {
                continue; // another millisecond
            }
            let a = ulid::Ulid::from_string(a).expect("ulid").random();
            let b = ulid::Ulid::from_string(b).expect("ulid").random();
            assert!(
                a.abs_diff(b) > 1 << 20,
                "ids {} and {} are near neighbours",
                pair[0],
                pair[1]
            );
        }
    }
}

/// Our migrations as this binary knows them and as the database has them applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    pub known: Vec<i64>,
    pub applied: Vec<i64>,
}

impl SchemaState {
    /// Why a command other than `migrate` and `run` must not use this database, if it must
    /// not: it has no schema yet, or it is behind or ahead of this binary.
    pub fn problem(&self) -> Option<String> {
        let list = |v: &[i64]| {
            v.iter()
                .map(|n| format!("{n:04}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.applied.is_empty() {
            return Some(
                "the database has no Switchboard schema yet: run `switchboard migrate` (or start \
                 the daemon) first"
                    .into(),
            );
        }
        let ahead: Vec<i64> = self
            .applied
            .iter()
            .filter(|v| !self.known.contains(v))
            .copied()
            .collect();
        if !ahead.is_empty() {
            return Some(format!(
                "the database is ahead of this binary: it has migration {} which this switchboard \
                 does not know (a newer version migrated it); use that version",
                list(&ahead)
            ));
        }
        let behind: Vec<i64> = self
            .known
            .iter()
            .filter(|v| !self.applied.contains(v))
            .copied()
            .collect();
        if !behind.is_empty() {
            return Some(format!(
                "the database is behind this binary: migration {} not applied; run `switchboard \
                 migrate` (or restart the daemon) first",
                list(&behind)
            ));
        }
        None
    }
}

#[cfg(test)]
mod schema_tests {
    use super::SchemaState;

    #[test]
    fn a_database_behind_or_ahead_is_named() {
        let state = |applied: &[i64]| SchemaState {
            known: vec![1, 2, 3],
            applied: applied.to_vec(),
        };
        assert_eq!(state(&[1, 2, 3]).problem(), None);
        assert!(
            state(&[])
                .problem()
                .is_some_and(|p| p.contains("no Switchboard schema"))
        );
        assert!(
            state(&[1, 2])
                .problem()
                .is_some_and(|p| p.contains("behind") && p.contains("0003"))
        );
        assert!(
            state(&[1, 2, 3, 4])
                .problem()
                .is_some_and(|p| p.contains("ahead") && p.contains("0004"))
        );
    }
}
