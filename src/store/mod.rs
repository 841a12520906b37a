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
mod accept_pg;
mod alerts;
mod api_keys;
mod appointments;
pub(crate) mod attachments;
mod audit;
mod campaigns;
mod canary;
mod consents;
mod console_sessions;
mod cursors;
mod deliveries;
mod dialect;
mod direct;
pub use direct::MdnFigures;
mod direct_inbound;
mod direct_mdns;
mod events;
mod fax;
mod fax_inbound;
mod group;
mod hl7;
mod hl7_pg;
mod inbound;
mod intake;
mod leases;
pub use leases::ScheduledRunRow;
mod matching;
mod messages;
mod organizations;
mod patients;
mod pauses;
mod reminders;
mod retention;
mod rows;
mod staff;
mod touch_batch;
mod urgent;
mod webhooks;

pub use crate::on_db;
#[cfg(feature = "test-support")]
pub use dialect::Db;
#[cfg(not(feature = "test-support"))]
pub(crate) use dialect::Db;
pub use dialect::pg_options;
pub(crate) use dialect::{HeldConnections, on_tx};

/// The consent rule's types, where the loaders return them.
pub use crate::domain::consent::{ConsentEntry, ConsentLedger, Part2Consents};
pub use alerts::AlertStateRow;
pub use api_keys::{ALL_SCOPES, ApiKeyRow, KeyGrant, NewApiKey};
pub use appointments::{AppointmentInput, AppointmentRow, RecallInput, RecallRow};
pub use attachments::{AttachmentBlob, AttachmentRow, NewAttachment};
pub use audit::AuditEntry;
pub use campaigns::{CampaignCounts, CampaignRow, CohortRow, NoticeRow, SkipCounts, TargetRow};
pub use consents::{ConsentChange, ConsentLookup};
pub use console_sessions::ConsoleSessionRow;
pub use deliveries::{Claimed, DeliveryFilter, DeliveryUpdate, InDoubt, SweepItem};
pub use direct_inbound::Quarantine as DirectQuarantine;
pub use direct_mdns::{MdnRow, NewMdnRow};
pub use events::{EventCursor, EventPage};
pub use fax::{FaxMediaRow, FaxRecordRow};
pub use fax_inbound::{FaxInboundRow, NewFaxInbound};
pub use group::{AfterAccept, GroupCommit, Pushes};
pub use hl7::{Hl7Arrival, Hl7Effects, Hl7Outcome, Hl7Record, Hl7Row};
pub use inbound::{FileInbound, InboundRow, NewInbound, NewOrphan, OrphanRow};
pub use intake::{ReassignInbound, StepRow};
pub use matching::PatientDemographics;
pub use messages::{
    AcceptItem, AcceptOutcome, MessageFilter, MessageListRow, MessageRecord, NewDelivery,
    NewMessage,
};
pub use patients::{ConsentInput, ContactPointInput, PatientInput};
pub use pauses::{ChannelFigures, PAUSE_TTL, PauseRow, RECENT_MS};
pub use reminders::{NewTouch, PlanRow, TouchRow};
pub use retention::Prunable;
pub use rows::*;
pub use staff::{StaffInput, StaffRow};
pub use touch_batch::{AcceptedTouch, TouchOutcome};
pub use urgent::{AlertRow, NewNotification};
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

/// Declares the repositories: one per aggregate, each a borrowed view of the store
/// (`store.deliveries().claim(…)`) whose queries live in the aggregate's file. A repository
/// reaches the pool through its own `db()`; nothing outside this module can.
macro_rules! repositories {
    ($($(#[$doc:meta])* $accessor:ident: $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug)]
            pub struct $name<'s> {
                store: &'s Store,
            }

            impl<'s> $name<'s> {
                fn db(&self) -> &'s Db {
                    &self.store.db
                }
            }
        )*

        impl Store {
            $(
                $(#[$doc])*
                pub fn $accessor(&self) -> $name<'_> {
                    $name { store: self }
                }
            )*
        }
    };
}

repositories! {
    /// API keys: issue, grant, list, revoke, expire.
    api_keys: ApiKeys;
    /// The at-rest keyring's canary row (proves the configured key opens this database).
    canary: Canary;
    /// Organizations and their slugs.
    organizations: Organizations;
    /// Patients, contact points, identifiers, merges and the matching lookups.
    patients: Patients;
    /// Appointments and recalls.
    appointments: Appointments;
    /// Consents and opt-outs, and the ledger the disclosure gate reads.
    consents: Consents;
    /// Messages, threads and idempotent acceptance.
    messages: Messages;
    /// Deliveries: claims, status updates, retries, dead letters, reconciliation.
    deliveries: Deliveries;
    /// Attachments (sealed blobs and their metadata).
    attachments: Attachments;
    /// The audit log.
    audit: Audit;
    /// The event feed.
    events: Events;
    /// Named cursors over the event feed.
    cursors: Cursors;
    /// Named leases (cron work once across a fleet).
    leases: Leases;
    /// The HL7 archive.
    hl7: Hl7;
    /// Inbound items, orphans, intake steps and the unmatched queue.
    inbound: Inbound;
    /// Direct: sent-message tracking, quarantine, inbound opening and MDNs.
    direct: Direct;
    /// Reminder planning, touches, rules and confirmations.
    reminders: Reminders;
    /// Recall campaigns.
    campaigns: Campaigns;
    /// Staff and on-call order.
    staff: Staff;
    /// Urgent alerts and their notifications.
    urgent: Urgent;
    /// Webhook endpoints and their deliveries.
    webhooks: Webhooks;
    /// Faxes out: provider records and the documents served to providers.
    faxes: Faxes;
    /// Received faxes' webhooks, waiting for the `fax-inbound` job (`fax_inbound`).
    received_faxes: ReceivedFaxes;
    /// Pruning what grows with traffic (the maintenance pass).
    retention: Retention;
    /// Alert rules' state per subject and the claim of their notices.
    alerts: Alerts;
    /// Paused channels and connectors, and the deliveries they hold back.
    pauses: Pauses;
    /// Operator console sessions.
    console_sessions: ConsoleSessions;
}

/// The store handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Bumped when events may have been written (on SQLite by an update hook on every
    /// connection; on PostgreSQL by the daemon's `LISTEN switchboard_events`): followers of the
    /// feed (the event stream, the webhook dispatcher) wait on it instead of polling. A wake-up
    /// is a hint; the feed is the truth.
    events_written: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped when this process creates or changes a webhook endpoint, so a dispatcher that
    /// knew of none starts at once (it polls for endpoints other daemons create).
    endpoints_changed: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Successes and failures per channel and connector, recorded as deliveries move (for
    /// the `channel_failing` alert; in memory, this daemon's view).
    health: crate::metrics::ChannelHealth,
    /// The pause table as this daemon last read it (`Pauses::current`).
    pause_cache: std::sync::Arc<pauses::PauseCache>,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed).
    pub async fn connect(url: &str, max_connections: u32, sqlite_full_sync: bool) -> Result<Self> {
        let events_written = std::sync::Arc::new(tokio::sync::watch::Sender::new(0u64));
        let db = Db::connect(url, max_connections, sqlite_full_sync, &events_written).await?;
        Ok(Self {
            db,
            events_written,
            endpoints_changed: std::sync::Arc::new(tokio::sync::watch::Sender::new(0u64)),
            health: crate::metrics::ChannelHealth::default(),
            pause_cache: Default::default(),
        })
    }

    /// Successes and failures per channel and connector seen through this store.
    pub fn health(&self) -> &crate::metrics::ChannelHealth {
        &self.health
    }

    /// A receiver that changes whenever events may have been written (see `events_written`).
    pub fn events_written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_written.subscribe()
    }

    /// A receiver that changes whenever this process created or changed a webhook endpoint.
    pub fn endpoints_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.endpoints_changed.subscribe()
    }

    /// Tells the feed's followers that events may have been written (the PostgreSQL
    /// listener calls this on every notification and after reconnecting).
    pub fn wake_event_followers(&self) {
        self.events_written.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies our migrations and the job queue's.
    pub async fn migrate(&self) -> Result<()> {
        self.db.migrate().await
    }

    /// Which of our migrations this binary knows and which the database has applied.
    pub async fn schema_state(&self) -> Result<SchemaState> {
        let (known, applied) = self.db.migration_versions().await?;
        Ok(SchemaState { known, applied })
    }

    /// On PostgreSQL, a listener on this database (`LISTEN`/`NOTIFY`); on SQLite, `None`.
    pub async fn listener(
        &self,
    ) -> std::result::Result<Option<sqlx::postgres::PgListener>, sqlx::Error> {
        self.db.listener().await
    }

    /// The pool, for the job queue's storage (apalis shares the database).
    #[cfg(not(feature = "test-support"))]
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The pool, for the job queue's storage and for tests that inspect rows directly.
    #[cfg(feature = "test-support")]
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
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
